// CNI error codes (spec 1.1.0, "Error" section) and the error value every plugin returns on failure.
// Plugins print `{"cniVersion","code","msg","details"}` on stdout and exit 1; the message names the field or
// object at fault.

export const ErrCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IO: 5,
  DecodeFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  // Plugin-specific codes (>= 100).
  /** An IPAM range has no free address left. */
  RangeExhausted: 100,
  /** A requested address is already held by another attachment. */
  AddressInUse: 101,
  /** The kernel refused a change (netlink/iptables error). */
  Kernel: 102,
  /** CHECK found the kernel or the allocation different from what ADD produced. */
  Drift: 103,
  /** An interface name already exists in the container. */
  InterfaceExists: 104,
  /** A delegated plugin could not be found or run, or returned a result that does not parse. */
  Delegate: 105,
  /** A bug in felt: an exception no code path expected. */
  Internal: 110,
} as const;

export type ErrCode = (typeof ErrCode)[keyof typeof ErrCode];

export interface CniError {
  readonly code: number;
  readonly msg: string;
  readonly details?: string;
}

export const cniError = (code: number, msg: string, details?: string): CniError =>
  details === undefined ? { code, msg } : { code, msg, details };

export const invalidConfig = (msg: string, details?: string): CniError => cniError(ErrCode.InvalidNetworkConfig, msg, details);

export const isCniError = (e: unknown): e is CniError =>
  typeof e === 'object' && e !== null && typeof (e as CniError).code === 'number' && typeof (e as CniError).msg === 'string';
