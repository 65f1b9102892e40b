// Writes docs/api.md: every name exported by the library root (src/index.ts, `moe-ts`) and the
// Node entry (src/node.ts, `moe-ts/node`), one line each, from the first sentence of its doc
// comment (or scripts/api-summaries.json for names without one). Run by `npm run docs:api`; test/repo/api-doc.test.ts checks the file covers every export.
import ts from 'typescript';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entries = [
  { file: join(root, 'src/index.ts'), title: '`moe-ts` (library root: runs anywhere, no Node built-ins)' },
  { file: join(root, 'src/node.ts'), title: '`moe-ts/node` (Node only: adds to the root)' },
];
const program = ts.createProgram(
  entries.map((e) => e.file),
  { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, strict: true, skipLibCheck: true, types: ['node'] },
);
const checker = program.getTypeChecker();
// one-liners for names without a doc comment of their own (kept here so sources need no churn)
const fallback = JSON.parse(readFileSync(join(root, 'scripts/api-summaries.json'), 'utf8'));

function kindOf(sym) {
  const f = sym.flags;
  if (f & ts.SymbolFlags.Class) return 'class';
  if (f & ts.SymbolFlags.Function) return 'function';
  if (f & ts.SymbolFlags.Interface) return 'interface';
  if (f & ts.SymbolFlags.TypeAlias) return 'type';
  if (f & ts.SymbolFlags.Enum) return 'enum';
  if (f & ts.SymbolFlags.Variable) return 'const';
  return 'name';
}

function summary(sym) {
  let text = ts.displayPartsToString(sym.getDocumentationComment(checker)).trim();
  if (!text) {
    // functions documented on their (first) signature
    const decl = sym.declarations?.[0];
    const sig = decl && ts.isFunctionLike(decl) ? checker.getSignatureFromDeclaration(decl) : undefined;
    if (sig) text = ts.displayPartsToString(sig.getDocumentationComment(checker)).trim();
  }
  text = text.replace(/\s+/g, ' ');
  const m = text.match(/^(.*?[.:])(\s|$)/);
  return (m ? m[1] : text).replace(/[.:]$/, '');
}

const seen = new Set();
const out = ['# API', '', 'Every exported name, one line each (generated from the doc comments by `npm run docs:api`; do not edit by hand).', ''];
const missing = [];
for (const e of entries) {
  const modSym = checker.getSymbolAtLocation(program.getSourceFile(e.file));
  const rows = [];
  for (const exp of checker.getExportsOfModule(modSym)) {
    if (seen.has(exp.name)) continue;
    seen.add(exp.name);
    const sym = exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp;
    const src = sym.declarations?.[0]?.getSourceFile().fileName;
    const s = summary(sym) || fallback[exp.name] || '';
    if (!s) missing.push(`${exp.name} (${src ? relative(root, src) : '?'})`);
    rows.push({ name: exp.name, line: `- \`${exp.name}\` (${kindOf(sym)}, ${src ? relative(root, src) : '?'}): ${s || 'TODO: undocumented'}` });
  }
  rows.sort((a, b) => a.name.localeCompare(b.name));
  out.push(`## ${e.title}`, '', ...rows.map((r) => r.line), '');
}
writeFileSync(join(root, 'docs/api.md'), out.join('\n'));
console.log(`docs/api.md: ${seen.size} names${missing.length ? `, ${missing.length} without a doc comment:\n  ${missing.join('\n  ')}` : ''}`);
