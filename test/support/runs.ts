// How many cases a property test tries. The default suite keeps them modest; `npm run test:deep`
// (FELT_DEEP=1, nightly-style) multiplies them by FELT_DEEP_FACTOR (default 50) to find rarer paths.

export const deep = !!process.env['FELT_DEEP'];

export const runs = (n: number): number => (deep ? n * Number(process.env['FELT_DEEP_FACTOR'] ?? 50) : n);
