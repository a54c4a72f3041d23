#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm install` (the prepare script).
import('../dist/src/cli/main.js').then((m) => m.main(process.argv.slice(2))).catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('meshca: not built yet; run `npm install` (or `npm run build`) first\n');
    process.exit(1);
  }
  process.stderr.write(`meshca: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
