import { z } from 'zod';
import { duration } from '../config/fields.js';

/** Default of auth.kubernetesTokens.maxConcurrentReviews (also what TokenReviewAuthenticator uses without one). */
export const DEFAULT_MAX_CONCURRENT_REVIEWS = 32;

/**
 * `auth.kubernetesTokens`: accept `authorization: Bearer <projected ServiceAccount token>` on the gRPC APIs (SDS,
 * controller, Istio CA), validated with a Kubernetes TokenReview. Off by default: a token is then refused
 * (UNAUTHENTICATED), never silently ignored. Durations come out as seconds.
 */
export const kubernetesTokensSchema = z
  .strictObject({
    enabled: z.boolean().default(false),
    /** Audience the tokens must be issued for (`audience` of the projected serviceAccountToken volume). */
    audience: z
      .string()
      .min(1, { message: 'must not be empty' })
      .refine((v) => !/\s/.test(v), { message: 'must not contain whitespace' })
      .default('meshca'),
    /** Kubeconfig file; empty = in-cluster config, then $KUBECONFIG / ~/.kube/config. */
    kubeconfig: z.string().default(''),
    /** How long a successful review is reused (never past the token's own `exp`). */
    cacheTtl: duration({ min: 1, max: 300 }).default(30),
    /** How long a rejected token stays rejected without asking the API server again. */
    negativeCacheTtl: duration({ max: 60 }).default(5),
    /** Most cached reviews (oldest dropped first). */
    cacheSize: z.number().int().min(1).max(1_000_000).default(10_000),
    /**
     * Most TokenReviews in flight at once; more distinct tokens wait (up to 32 per slot, 2,048 in all), and beyond
     * that are refused as UNAVAILABLE (retryable), so a flood of new or junk tokens cannot turn into a flood on the API
     * server. A review unanswered at the review timeout is aborted and its slot freed.
     */
    maxConcurrentReviews: z.number().int().min(1).max(1024).default(DEFAULT_MAX_CONCURRENT_REVIEWS),
  })
  .superRefine((c, ctx) => {
    if (c.negativeCacheTtl > c.cacheTtl) {
      ctx.addIssue({ code: 'custom', path: ['negativeCacheTtl'], message: 'must not be longer than cacheTtl' });
    }
  });

export const authConfigSchema = z
  .strictObject({
    kubernetesTokens: kubernetesTokensSchema.prefault({}),
  })
  .prefault({});

export type KubernetesTokensConfig = z.output<typeof kubernetesTokensSchema>;
export type AuthConfig = z.output<typeof authConfigSchema>;
