# Container image for examples/kubernetes (image name there: meshca:dev). Not built by CI: the CI machines have
# no Docker engine. Build: docker build -t meshca:dev .
FROM node:22-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY bin bin
COPY scripts scripts
COPY src src
COPY providers providers
COPY proto proto
COPY test test
COPY examples/tuning/openssl.cnf openssl.cnf
RUN npm ci && npm prune --omit=dev && rm -rf test dist/test
# No TLS 1.3 session tickets (README "Performance"); replace or unset it if you bring your own OpenSSL config.
ENV OPENSSL_CONF=/app/openssl.cnf
USER node
ENTRYPOINT ["node", "bin/meshca.js"]
CMD ["serve"]
