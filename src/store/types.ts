/**
 * Where CA state lives: a directory (src/store/file-store.ts) or, for HA on Kubernetes, a Secret.
 * Keys are short names ("authority", "internal-root"); values are opaque bytes (JSON documents holding PEM).
 * Contract: write() is atomic (a reader sees the old or the new value, never a mix) and private (0600 on disk);
 * read() of a key that was never written returns undefined; any other read failure throws.
 */
export interface StateStore {
  /** Human-readable location for error messages, e.g. "dataDir /var/lib/meshca". */
  readonly location: string;
  read(key: string): Promise<Buffer | undefined>;
  write(key: string, value: Buffer): Promise<void>;
  /** Names of all keys present. */
  list(): Promise<string[]>;
  /**
   * Runs fn while holding the store's exclusive lock, so that several processes (serve and issue) or replicas
   * never interleave a read-modify-write. A lock left by a killed process never blocks for long.
   */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
  /** Calls onChange when another writer changed a key (optional; used by HA stores). Returns unsubscribe. */
  watch?(onChange: (key: string) => void): () => void;
  close?(): Promise<void>;
}
