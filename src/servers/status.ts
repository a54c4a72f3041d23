import * as grpc from '@grpc/grpc-js';
import { CaError, type ErrorCode } from '../util/errors.js';

/**
 * The one place where a CaError becomes a gRPC status. Only `message` (written to be shown to callers) leaves the
 * process; `detail` and `cause` are for logs. Anything that is not a CaError is an internal error whose text is NOT
 * sent (it may carry backend URLs or paths).
 */
const CODE: Record<ErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  NOT_FOUND: grpc.status.NOT_FOUND,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED,
  INTERNAL: grpc.status.INTERNAL,
};

export interface GrpcStatus {
  readonly code: grpc.status;
  readonly details: string;
}

export function grpcCode(code: ErrorCode): grpc.status {
  return CODE[code];
}

export function toGrpcStatus(e: unknown): GrpcStatus {
  if (e instanceof CaError) return { code: CODE[e.code], details: e.message };
  return { code: grpc.status.INTERNAL, details: 'internal error' };
}

/** A ServiceError for grpc-js callbacks and stream.destroy(): code + message, empty metadata. */
export function toServiceError(e: unknown): Partial<grpc.StatusObject> & Error {
  const s = toGrpcStatus(e);
  const err = new Error(s.details) as Error & Partial<grpc.StatusObject>;
  err.code = s.code;
  err.details = s.details;
  err.metadata = new grpc.Metadata();
  return err;
}
