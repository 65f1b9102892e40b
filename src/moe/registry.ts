/** Name -> factory registries, so configs pick routers, experts, losses by name. */

export class Registry<F> {
  private readonly items = new Map<string, { factory: F; description: string }>();
  constructor(readonly kind: string) {}

  register(name: string, factory: F, description: string): void {
    if (this.items.has(name)) throw new Error(`${this.kind} "${name}" is already registered`);
    this.items.set(name, { factory, description });
  }

  get(name: string): F {
    const item = this.items.get(name);
    if (!item) throw new Error(`unknown ${this.kind} "${name}": expected one of ${this.names().join(', ')}`);
    return item.factory;
  }

  has(name: string): boolean {
    return this.items.has(name);
  }

  names(): string[] {
    return [...this.items.keys()];
  }

  describe(): { name: string; description: string }[] {
    return [...this.items].map(([name, v]) => ({ name, description: v.description }));
  }
}
