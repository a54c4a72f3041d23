import type { AnyGrpcServer } from '../istio/service.js';
import { serviceDefinition, BUNDLE_SERVICE, IDENTITY_SERVICE } from './proto.js';
import { bundleServiceHandlers } from './bundle-service.js';
import { identityServiceHandlers, type ControllerServiceDeps } from './identity-service.js';

export type { ControllerServiceDeps } from './identity-service.js';

/**
 * Registers meshca.v1.IdentityService and meshca.v1.BundleService on a gRPC server (a grpc-js Server or
 * src/servers/grpc-server.ts GrpcServer; anything with addService). Call before the server starts.
 */
export function registerControllerServices(server: AnyGrpcServer, deps: ControllerServiceDeps): void {
  server.addService(serviceDefinition(IDENTITY_SERVICE), identityServiceHandlers(deps));
  server.addService(serviceDefinition(BUNDLE_SERVICE), bundleServiceHandlers(deps));
}
