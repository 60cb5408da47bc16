// What `felt cni` records: one stream per network (`cni/<network>`), an event per attachment made, per failed
// ADD (and the teardown it did), and per attachment removed by DEL or GC. The projection is the attachments
// the runtime believes exist, so `felt events` explains them and GC can name what it removed.

import type { Event, Projection } from '../events.ts';

export interface AttachmentKey {
  readonly containerId: string;
  readonly ifname: string;
}

type AttachmentAdded = Event<
  'AttachmentAdded',
  AttachmentKey & { readonly network: string; readonly netns: string; readonly plugins: readonly string[]; readonly ips: readonly string[] }
>;
type AttachmentAddFailed = Event<
  'AttachmentAddFailed',
  AttachmentKey & {
    readonly network: string;
    readonly netns: string;
    readonly plugin: string;
    readonly error: string;
    readonly tornDown: readonly string[];
    /** The attachment was already made before this ADD and stays (nothing torn down). */
    readonly kept?: boolean;
  }
>;
/** `reason`: `del` (felt cni del) or `gc` (not in the valid attachments). `errors`: plugins whose DEL failed. */
type AttachmentDeleted = Event<
  'AttachmentDeleted',
  AttachmentKey & { readonly network: string; readonly reason: 'del' | 'gc'; readonly errors: readonly string[] }
>;
export type RuntimeEvent = AttachmentAdded | AttachmentAddFailed | AttachmentDeleted;

interface Attachment extends AttachmentKey {
  readonly netns: string;
  readonly plugins: readonly string[];
  readonly ips: readonly string[];
  readonly since: string;
}

export interface RuntimeState {
  readonly attachments: Readonly<Record<string, Attachment>>;
}

export const runtimeStream = (network: string): string => `cni/${network}`;
export const attachmentKey = (k: AttachmentKey): string => `${k.containerId}/${k.ifname}`;

export const runtimeProjection: Projection<RuntimeState, RuntimeEvent> = {
  name: 'cni-runtime@1',
  initialState: () => ({ attachments: {} }),
  evolve: (s, e) => {
    switch (e.type) {
      case 'AttachmentAdded': {
        const d = e.data;
        const a: Attachment = {
          containerId: d.containerId,
          ifname: d.ifname,
          netns: d.netns,
          plugins: d.plugins,
          ips: d.ips,
          since: e.time,
        };
        return { attachments: { ...s.attachments, [attachmentKey(d)]: a } };
      }
      case 'AttachmentAddFailed':
      case 'AttachmentDeleted': {
        if (e.type === 'AttachmentAddFailed' && e.data.kept === true) return s;
        const { [attachmentKey(e.data)]: _gone, ...rest } = s.attachments;
        return { attachments: rest };
      }
    }
  },
};
