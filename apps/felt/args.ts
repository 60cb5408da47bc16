// A small argv parser: `--name value`, `--name=value`, boolean `--flag`, positionals. Options are declared
// per subcommand so unknown ones are refused with the subcommand's usage.

export interface OptionSpec {
  readonly name: string;
  /** Takes a value (`--network N`) or is a switch (`--json`). */
  readonly value?: string;
  readonly help: string;
  /** May be given more than once: the values are joined with ',' (as one comma list). */
  readonly repeatable?: boolean;
}

export interface Parsed {
  readonly options: Readonly<Record<string, string | true>>;
  readonly positionals: readonly string[];
}

export function parseArgs(
  argv: readonly string[],
  specs: readonly OptionSpec[],
): { ok: true; parsed: Parsed } | { ok: false; error: string } {
  const options: Record<string, string | true> = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--') || a === '--') {
      if (a === '-h') options['help'] = true;
      else positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    if (name === 'help') {
      options['help'] = true;
      continue;
    }
    const spec = specs.find((s) => s.name === name);
    if (!spec) return { ok: false, error: `unknown option --${name}` };
    if (!spec.value) {
      if (eq >= 0) return { ok: false, error: `--${name} takes no value` };
      options[name] = true;
      continue;
    }
    const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined) return { ok: false, error: `--${name} needs a value (${spec.value})` };
    const before = options[name];
    options[name] = spec.repeatable && typeof before === 'string' ? `${before},${v}` : v;
  }
  return { ok: true, parsed: { options, positionals } };
}

export const str = (p: Parsed, name: string): string | undefined => {
  const v = p.options[name];
  return typeof v === 'string' ? v : undefined;
};

export const flag = (p: Parsed, name: string): boolean => p.options[name] === true;
