// felt's version, from package.json. The bundles in dist/ get this module generated with the version written
// in (scripts/build.mjs), so an executable reads no file for it; run from source (tests, tsx) it is read here.

import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;
