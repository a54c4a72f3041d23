/** Items an error message lists before it only counts the rest: a gRPC status travels in a trailer that clients cap (~60 KB). */
export const LISTED_ITEMS = 10;

/** Quoted, each cut at 200 characters, the first `max` of them and then a count of the others. */
export function showList(items: readonly string[], max = LISTED_ITEMS): string {
  const listed = items
    .slice(0, max)
    .map((n) => JSON.stringify(n.length > 200 ? `${n.slice(0, 197)}...` : n))
    .join(', ');
  return items.length > max ? `${listed} and ${items.length - max} more` : listed;
}
