// resolv.conf, as host-local reads it into the result's `dns`: nameserver (each), domain (the last one
// wins), search and options (accumulated). Comments (# or ;), blank lines and unknown keywords are skipped.
// The app reads the file; this only parses its text.

import type { DNS } from '../cni/result.ts';

export function parseResolvConf(text: string): DNS {
  const nameservers: string[] = [];
  const search: string[] = [];
  const options: string[] = [];
  let domain = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const fields = line.split(/\s+/);
    if (fields.length < 2) continue;
    const [key, first, ...rest] = fields as [string, string, ...string[]];
    switch (key) {
      case 'nameserver':
        nameservers.push(first);
        break;
      case 'domain':
        domain = first;
        break;
      case 'search':
        search.push(first, ...rest);
        break;
      case 'options':
        options.push(first, ...rest);
        break;
    }
  }
  const dns: DNS = {};
  if (nameservers.length) dns.nameservers = nameservers;
  if (domain) dns.domain = domain;
  if (search.length) dns.search = search;
  if (options.length) dns.options = options;
  return dns;
}
