/**
 * Registries of specs: registering a router, expert type, dispatch or balancing loss records
 * everything about it in one object (factory, one-line summary, paper, zod option schema,
 * traits). The rest of the code reads specs and traits, never an entry's name.
 */

/** The paper an entry implements, cited in one line. */
export interface Paper {
  /** 'Fedus et al.' */
  authors: string;
  title: string;
  year: number;
}

export interface EntrySpec {
  /** The config name. */
  name: string;
  /** One line: what it does. */
  summary: string;
  paper?: Paper;
}

/** 'summary (Fedus et al. 2021)'. */
export function describeEntry(spec: EntrySpec): string {
  return spec.paper ? `${spec.summary} (${spec.paper.authors} ${spec.paper.year})` : spec.summary;
}

/** '"Switch Transformers: ...", Fedus et al. 2021'. */
export function citation(paper: Paper): string {
  return `"${paper.title}", ${paper.authors} ${paper.year}`;
}

export class Registry<S extends EntrySpec, F = S> {
  private readonly items = new Map<string, S>();
  /**
   * @param kind what the entries are, for errors ('router')
   * @param factoryOf what get() returns for a spec (the validating factory; default: the spec)
   */
  constructor(
    readonly kind: string,
    private readonly factoryOf: (spec: S) => F = (s) => s as unknown as F,
  ) {}

  register(spec: S): void {
    if (typeof spec.name !== 'string' || !spec.name) throw new Error(`${this.kind}: a spec needs a non-empty name`);
    if (this.items.has(spec.name)) throw new Error(`${this.kind} "${spec.name}" is already registered`);
    if (!spec.summary) throw new Error(`${this.kind} "${spec.name}": a spec needs a one-line summary`);
    this.items.set(spec.name, spec);
  }

  /** The spec of a registered entry; the error lists the registered names. */
  spec(name: string): S {
    const s = this.items.get(name);
    if (!s) throw new Error(`unknown ${this.kind} "${name}": expected one of ${this.names().join(', ')}`);
    return s;
  }

  find(name: string): S | undefined {
    return this.items.get(name);
  }

  get(name: string): F {
    return this.factoryOf(this.spec(name));
  }

  has(name: string): boolean {
    return this.items.has(name);
  }

  names(): string[] {
    return [...this.items.keys()];
  }

  specs(): S[] {
    return [...this.items.values()];
  }

  describe(): { name: string; description: string }[] {
    return this.specs().map((s) => ({ name: s.name, description: describeEntry(s) }));
  }
}
