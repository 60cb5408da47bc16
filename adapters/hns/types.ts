// The Host Networking Service as win-bridge and win-overlay use it: HNS v1 (networks and endpoints by name,
// hot attach to a container) and HCN v2 (endpoints added to a host compute namespace). Two adapters: windows.ts
// (the HNS/HCN APIs through an FFI library, Windows only) and the twin in adapters/memory/hns.ts.

import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { HcnEndpoint, HcnNetwork, HnsEndpoint, HnsNetwork } from '../../core/hns/endpoint.ts';

export interface HnsError {
  readonly kind: 'hns';
  readonly msg: string;
  /** HNS/HCN said the object does not exist. */
  readonly notFound?: boolean;
  /** HotAttach: the container's compute system is gone (hcsshim.ErrComputeSystemDoesNotExist). */
  readonly computeSystemGone?: boolean;
}

export interface Hns {
  /** hcn.DSRSupported(): this HNS supports loopback direct server return. */
  readonly dsrSupported: () => TE.TaskEither<HnsError, boolean>;
  // HNS v1
  readonly network: (name: string) => TE.TaskEither<HnsError, HnsNetwork | undefined>;
  readonly endpoint: (name: string) => TE.TaskEither<HnsError, HnsEndpoint | undefined>;
  /** Create; HNS fills Id (and MAC / address when not given). */
  readonly createEndpoint: (req: HnsEndpoint) => TE.TaskEither<HnsError, HnsEndpoint>;
  readonly deleteEndpoint: (id: string) => TE.TaskEither<HnsError, void>;
  readonly hotAttach: (containerId: string, endpointId: string) => TE.TaskEither<HnsError, void>;
  readonly hotDetach: (containerId: string, endpointId: string) => TE.TaskEither<HnsError, void>;
  readonly containerDetach: (containerId: string, endpointId: string) => TE.TaskEither<HnsError, void>;
  // HCN v2
  readonly hcnNetwork: (name: string) => TE.TaskEither<HnsError, HcnNetwork | undefined>;
  readonly hcnEndpoint: (name: string) => TE.TaskEither<HnsError, HcnEndpoint | undefined>;
  readonly createHcnEndpoint: (req: HcnEndpoint) => TE.TaskEither<HnsError, HcnEndpoint>;
  readonly deleteHcnEndpoint: (id: string) => TE.TaskEither<HnsError, void>;
  readonly namespaceExists: (id: string) => TE.TaskEither<HnsError, boolean>;
  readonly addNamespaceEndpoint: (namespace: string, endpointId: string) => TE.TaskEither<HnsError, void>;
  readonly removeNamespaceEndpoint: (namespace: string, endpointId: string) => TE.TaskEither<HnsError, void>;
}
