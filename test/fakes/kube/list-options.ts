/**
 * The API server's checks of list and watch query parameters (apimachinery internalversion/validation
 * ValidateListOptions), answered as 422 Invalid `ListOptions.meta.k8s.io "" is invalid: ...`. The fake serves
 * neither pagination nor streaming lists, so it behaves like a server with the WatchList feature off:
 * sendInitialEvents is refused.
 */
import { fieldErr, statusErrors, type StatusCause } from './status.js';

export function validateListOptions(q: URLSearchParams, watch: boolean): void {
  const errs: StatusCause[] = [];
  const match = q.get('resourceVersionMatch') ?? '';
  const rv = q.get('resourceVersion') ?? '';
  const cont = q.get('continue') ?? '';
  const initial = q.get('sendInitialEvents');
  if (watch) {
    if (initial !== null) {
      if (match !== 'NotOlderThan') errs.push(fieldErr.forbidden('resourceVersionMatch', 'sendInitialEvents requires setting resourceVersionMatch to NotOlderThan'));
      errs.push(fieldErr.forbidden('sendInitialEvents', 'sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled'));
    }
    if (match !== '') {
      if (initial === null) errs.push(fieldErr.forbidden('resourceVersionMatch', 'resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided'));
      if (match !== 'NotOlderThan') errs.push(fieldErr.notSupported('resourceVersionMatch', match, ['NotOlderThan']));
      if (cont !== '') errs.push(fieldErr.forbidden('resourceVersionMatch', 'resourceVersionMatch is forbidden when continue is provided'));
    }
  } else {
    if (match !== '') {
      if (rv === '') errs.push(fieldErr.forbidden('resourceVersionMatch', 'resourceVersionMatch is forbidden unless resourceVersion is provided'));
      if (cont !== '') errs.push(fieldErr.forbidden('resourceVersionMatch', 'resourceVersionMatch is forbidden when continue is provided'));
      if (match !== 'Exact' && match !== 'NotOlderThan') errs.push(fieldErr.notSupported('resourceVersionMatch', match, ['Exact', 'NotOlderThan', '']));
      if (match === 'Exact' && rv === '0') errs.push(fieldErr.forbidden('resourceVersionMatch', 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'));
    }
    if (initial !== null) errs.push(fieldErr.forbidden('sendInitialEvents', 'sendInitialEvents is forbidden for list'));
  }
  const timeout = q.get('timeoutSeconds');
  if (timeout !== null && !/^\d+$/.test(timeout)) {
    throw statusErrors.badRequest(`timeoutSeconds: strconv.ParseInt: parsing ${JSON.stringify(timeout)}: invalid syntax`);
  }
  if (errs.length > 0) throw statusErrors.invalid('ListOptions', 'meta.k8s.io', '', errs);
}
