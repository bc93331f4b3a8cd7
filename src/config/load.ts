/**
 * Loads and validates the configuration.
 *
 * Layers, later wins:
 *   1. config/default.yaml: every key with its default;
 *   2. config/<profile>.yaml when a profile is chosen (RINGBRIDGE_PROFILE or --profile);
 *   3. the file named by RINGBRIDGE_CONFIG or --config;
 *   4. environment variables RINGBRIDGE_<SECTION>__<KEY>[__<KEY>...], e.g. RINGBRIDGE_HTTP__PORT=9090
 *      or RINGBRIDGE_REDIS__KEY_PREFIX=prod: (a double underscore separates levels, a single
 *      underscore separates words of a camelCase key). Values are read as the schema expects:
 *      numbers, true/false, and comma-separated or JSON lists;
 *   5. programmatic overrides (tests).
 * Environment variables without a double underscore (RINGBRIDGE_CONFIG, RINGBRIDGE_PROFILE,
 * RINGBRIDGE_CACHE_DIR, ...) are process settings, not configuration keys.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { type z } from 'zod';
import { maskUrlPassword } from '../log/redact.js';
import { projectRoot } from '../util/paths.js';
import { type Config, configSchema } from './schema.js';

/** The project's config/ directory. */
export function defaultConfigDir(): string {
  return path.join(projectRoot(), 'config');
}

/** A plain nested object of configuration values. */
export type ConfigTree = { [key: string]: unknown };

/** Options of loadConfig(). */
export interface LoadConfigOptions {
  /** Directory holding default.yaml and the profile files. Default: the project's config/. */
  configDir?: string;
  /** Profile name (config/<profile>.yaml). Default: env RINGBRIDGE_PROFILE, else none. */
  profile?: string;
  /** Extra YAML file applied after the profile. Default: env RINGBRIDGE_CONFIG, else none. */
  file?: string;
  /** Environment to read overrides from. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** Values applied last (tests). */
  overrides?: ConfigTree;
}

/** One problem found in the configuration. */
export interface ConfigProblem {
  /** Dotted key, e.g. "http.port". */
  key: string;
  /** Where the offending value came from ("config/test.yaml", "environment variable X", ...). */
  source: string;
  /** The offending value (undefined when missing). */
  value: unknown;
  /** What was expected, as a sentence fragment. */
  expected: string;
}

/** Thrown when the configuration cannot be loaded; the message lists every problem. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'RB_ERR_CONFIG';

  constructor(readonly problems: ConfigProblem[]) {
    super(['invalid configuration:', ...problems.map((p) => `  - ${describeProblem(p)}`)].join('\n'));
  }
}

function describeProblem(p: ConfigProblem): string {
  const where = p.source ? ` (${p.source})` : '';
  if (p.value === undefined) {
    return `${p.key} is missing${where}: expected ${p.expected}`;
  }

  return `${p.key} = ${showValue(p.value, p.key)}${where}: expected ${p.expected}`;
}

function showValue(v: unknown, key = ''): string {
  if (/secret|password|token|ha1/i.test(key) && typeof v === 'string' && v !== '') {
    return '[set]';
  }
  const text = maskUrlPassword(JSON.stringify(v) ?? String(v), '[set]');

  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function isPlainObject(v: unknown): v is ConfigTree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep-merges `src` into `dst` (arrays and scalars replace), recording each leaf's source. */
function mergeInto(dst: ConfigTree, src: ConfigTree, source: string, sources: Map<string, string>, prefix = ''): void {
  for (const [k, v] of Object.entries(src)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isPlainObject(v)) {
      const existing = dst[k];
      const target: ConfigTree = isPlainObject(existing) ? existing : {};
      dst[k] = target;
      mergeInto(target, v, source, sources, key);
      if (Object.keys(v).length === 0) {
        sources.set(key, source);
      }
    } else {
      dst[k] = v;
      sources.set(key, source);
    }
  }
}

function readYamlFile(file: string, label: string): ConfigTree {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([{ key: 'config file', source: label, value: file, expected: code === 'ENOENT' ? 'an existing file' : code === 'EISDIR' ? 'a file, not a directory' : `a readable file (${code ?? (err as Error).message})` }]);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line;
    const first = (e.message.split('\n')[0] ?? '').replace(/\s*at line \d+, column \d+:?\s*$/, '').replace(/:$/, '');
    const col = e.linePos?.[0]?.col;
    throw new ConfigError([{ key: 'config file', source: `${label}${line ? ` line ${line}${col ? ` column ${col}` : ''}` : ''}`, value: file, expected: `valid YAML (${first})` }]);
  }
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) {
    return {};
  }
  if (!isPlainObject(data)) {
    throw new ConfigError([{ key: 'config file', source: label, value: file, expected: 'a YAML mapping at the top level' }]);
  }

  return data;
}

/** The schema node at a dotted path, or undefined when the path is not in the schema. */
function schemaAt(keys: string[]): z.core.$ZodType | undefined {
  let node: z.core.$ZodType = configSchema;
  for (const k of keys) {
    const def = unwrap(node)._zod.def as { type: string; shape?: Record<string, z.core.$ZodType> };
    if (def.type !== 'object' || !def.shape || !Object.hasOwn(def.shape, k)) {
      return undefined;
    }
    node = def.shape[k]!;
  }

  return unwrap(node);
}

/** The schema inside optional/nullable/default wrappers (optional sections such as push.apns). */
function unwrap(node: z.core.$ZodType): z.core.$ZodType {
  let n = node;
  for (let def = n._zod.def as { type: string; innerType?: z.core.$ZodType }; (def.type === 'optional' || def.type === 'nullable' || def.type === 'default') && def.innerType; def = n._zod.def as typeof def) {
    n = def.innerType;
  }

  return n;
}

/** " (did you mean RINGBRIDGE_X__Y?)" for a mistyped key, comparing without case and underscores. */
function suggestEnv(keys: string[]): string {
  const squash = (k: string) => k.toLowerCase().replace(/_/g, '');
  let node: z.core.$ZodType = configSchema;
  const fixed: string[] = [];
  for (const k of keys) {
    const def = unwrap(node)._zod.def as { type: string; shape?: Record<string, z.core.$ZodType> };
    if (def.type !== 'object' || !def.shape) {
      return '';
    }
    const match = Object.keys(def.shape).find((name) => squash(name) === squash(k));
    if (!match) {
      return '';
    }
    fixed.push(match);
    node = def.shape[match]!;
  }

  return ` (did you mean ${ENV_PREFIX}${fixed.map((k) => k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()).join('__')}?)`;
}

function snakeToCamel(s: string): string {
  return s.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

const ENV_PREFIX = 'RINGBRIDGE_';

/** Turns RINGBRIDGE_<A>__<B> variables into a tree, reading each value as the schema expects. */
function envOverrides(env: NodeJS.ProcessEnv, sources: Map<string, string>, problems: ConfigProblem[]): ConfigTree {
  const tree: ConfigTree = {};
  const sections = Object.keys((configSchema._zod.def as { shape: Record<string, unknown> }).shape);
  for (const n of Object.keys(env)) {
    // RINGBRIDGE_HTTP=9090 names a section, not a key: say so instead of ignoring it.
    if (n.startsWith(ENV_PREFIX) && !n.includes('__') && sections.includes(snakeToCamel(n.slice(ENV_PREFIX.length)))) {
      problems.push({ key: snakeToCamel(n.slice(ENV_PREFIX.length)), source: `environment variable ${n}`, value: env[n], expected: `a key inside the section, e.g. ${n}__<KEY> (double underscore)` });
    }
  }
  const names = Object.keys(env)
    .filter((n) => n.startsWith(ENV_PREFIX) && n.includes('__'))
    .sort();
  for (const name of names) {
    const raw = env[name]!;
    const keys = name.slice(ENV_PREFIX.length).split('__').map(snakeToCamel);
    const dotted = keys.join('.');
    const source = `environment variable ${name}`;
    const node = schemaAt(keys);
    if (!node) {
      problems.push({ key: dotted, source, value: raw, expected: `a known configuration key${suggestEnv(keys)} (see config/default.yaml)` });
      continue;
    }
    const type = (node._zod.def as { type: string }).type;
    let value: unknown = raw;
    if (type === 'number' || type === 'int') {
      value = raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    } else if (type === 'boolean') {
      value = raw === 'true' ? true : raw === 'false' ? false : raw;
    } else if (type === 'array') {
      value = raw.trim().startsWith('[') ? safeJson(raw) : raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    } else if (type === 'object') {
      value = safeJson(raw);
    }
    let cursor = tree;
    for (const k of keys.slice(0, -1)) {
      const next = cursor[k];
      cursor = isPlainObject(next) ? next : (cursor[k] = {});
    }
    cursor[keys[keys.length - 1]!] = value;
    sources.set(dotted, source);
  }

  return tree;
}

function safeJson(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function getAt(tree: unknown, keys: PropertyKey[]): unknown {
  let cur: unknown = tree;
  for (const k of keys) {
    if (!isPlainObject(cur) && !Array.isArray(cur)) {
      return undefined;
    }
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }

  return cur;
}

function sourceOf(sources: Map<string, string>, key: string): string {
  for (let k = key; k !== ''; k = k.includes('.') ? k.slice(0, k.lastIndexOf('.')) : '') {
    const s = sources.get(k);
    if (s) {
      return s;
    }
  }
  // an unknown section: its leaves carry the source
  for (const [k, s] of sources) {
    if (k.startsWith(`${key}.`)) {
      return s;
    }
  }

  return '';
}

function expectedOf(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected === 'int' ? 'an integer' : `a value of type ${issue.expected}`;
    case 'too_small':
      return `${issue.origin === 'array' ? 'at least' : issue.inclusive ? 'at least' : 'more than'} ${String(issue.minimum)}${issue.origin === 'string' ? ' characters' : issue.origin === 'array' ? ' entries' : ''}`;
    case 'too_big':
      return `${issue.inclusive ? 'at most' : 'less than'} ${String(issue.maximum)}${issue.origin === 'string' ? ' characters' : issue.origin === 'array' ? ' entries' : ''}`;
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return issue.message && !issue.message.startsWith('Invalid') ? issue.message : `a valid ${issue.format}`;
    default:
      return issue.message;
  }
}

/** Validates a merged tree; returns the config or the problems. */
export function validateConfig(tree: ConfigTree, sources = new Map<string, string>()): { config?: Config; problems: ConfigProblem[] } {
  const result = configSchema.safeParse(tree);
  if (result.success) {
    return { config: result.data, problems: [] };
  }
  const problems: ConfigProblem[] = [];
  for (const issue of result.error.issues) {
    const key = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      const parent = getAt(tree, issue.path);
      const known = Object.keys(((schemaAt(issue.path.map(String))?._zod.def as { shape?: object } | undefined)?.shape ?? {}));
      for (const k of issue.keys) {
        const full = key ? `${key}.${k}` : k;
        problems.push({
          key: full,
          source: sourceOf(sources, full),
          value: isPlainObject(parent) ? parent[k] : undefined,
          expected: `no such key${known.length ? `; known keys here: ${known.join(', ')}` : ''}`,
        });
      }
      continue;
    }
    problems.push({ key, source: sourceOf(sources, key), value: getAt(tree, issue.path), expected: expectedOf(issue) });
  }

  return { problems };
}

/**
 * Loads, merges and validates the configuration.
 * @returns the validated config and the list of files that were read
 * @throws {ConfigError} naming every wrong or missing key with its value, source and what was expected
 */
export function loadConfig(opts: LoadConfigOptions = {}): { config: Config; files: string[] } {
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? defaultConfigDir();
  const sources = new Map<string, string>();
  const tree: ConfigTree = {};
  const files: string[] = [];
  const problems: ConfigProblem[] = [];

  const defaultsFile = path.join(dir, 'default.yaml');
  mergeInto(tree, readYamlFile(defaultsFile, 'config/default.yaml'), 'config/default.yaml', sources);
  files.push(defaultsFile);

  const profile = opts.profile ?? env.RINGBRIDGE_PROFILE ?? '';
  if (profile !== '') {
    if (!/^[a-z0-9][a-z0-9-]*$/.test(profile) || profile === 'default') {
      throw new ConfigError([{ key: '(profile)', source: 'RINGBRIDGE_PROFILE or --profile', value: profile, expected: 'a profile name such as "test" (lower-case letters, digits, "-")' }]);
    }
    const profileFile = path.join(dir, `${profile}.yaml`);
    if (!fs.existsSync(profileFile)) {
      const available = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'default.yaml' && !f.includes('example')).map((f) => f.slice(0, -5));
      throw new ConfigError([{ key: '(profile)', source: 'RINGBRIDGE_PROFILE or --profile', value: profile, expected: `one of: ${available.join(', ')}` }]);
    }
    mergeInto(tree, readYamlFile(profileFile, `config/${profile}.yaml`), `config/${profile}.yaml`, sources);
    files.push(profileFile);
  }

  const file = opts.file ?? env.RINGBRIDGE_CONFIG ?? '';
  if (file !== '') {
    const abs = path.resolve(file);
    const label = opts.file !== undefined ? `--config ${abs}` : `RINGBRIDGE_CONFIG ${abs}`;
    mergeInto(tree, readYamlFile(abs, label), abs, sources);
    files.push(abs);
  }

  mergeInto(tree, envOverrides(env, sources, problems), '(environment)', new Map());
  if (opts.overrides) {
    mergeInto(tree, opts.overrides, 'programmatic override', sources);
  }

  const result = validateConfig(tree, sources);
  problems.push(...result.problems);
  if (problems.length > 0 || !result.config) {
    throw new ConfigError(problems);
  }

  return { config: result.config, files };
}
