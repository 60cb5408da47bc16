// static IPAM: the configured addresses, routes and DNS as the result; nothing to allocate, remember or
// release (DEL succeeds), and CHECK compares prevResult's gateways with the config, as the reference does.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { cniError, ErrCode, invalidConfig } from '../../../core/cni/errors.ts';
import { IPAM_VERSIONS, readResult } from '../../../core/cni/result.ts';
import { checkStatic, parseStaticConf, staticResult, type StaticConf } from '../../../core/ipam/static.ts';
import type { Plugin } from '../plugin.ts';

export const staticIpam: Plugin = {
  type: 'static',
  versions: IPAM_VERSIONS,
  about: 'felt static: fixed addresses, routes and DNS from the config',
  add: (args, conf) => TE.fromEither(E.map(staticResult)(parseStaticConf(conf, args.args))),
  // Nothing was allocated; a config that does not parse still has nothing to release.
  del: () => TE.right(undefined),
  check: (args, conf) =>
    TE.fromEither(
      E.chain((sc: StaticConf) => {
        if (conf.raw['prevResult'] === undefined) return E.left(invalidConfig('prevResult: required for CHECK'));
        const prev = readResult(conf.raw['prevResult']);
        if (E.isLeft(prev)) return E.left(invalidConfig(`prevResult: ${prev.left}`));
        const wrong = checkStatic(sc, prev.right);
        return wrong ? E.left(cniError(ErrCode.Drift, wrong)) : E.right(undefined);
      })(parseStaticConf(conf, args.args)),
    ),
};
