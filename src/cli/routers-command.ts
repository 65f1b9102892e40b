/**
 * `moe-ts routers`: every registered router, expert type, dispatch and balancing loss, printed
 * from its spec (summary, paper, options with rules and defaults, traits). Nothing here knows an
 * entry by name, so a newly registered entry appears without touching this file.
 */
import { describeShape, showValue, type OptionDoc } from '../tensor/validate.js';
import { routerRegistry, type RouterSpec } from '../moe/routers/index.js';
import { expertRegistry } from '../moe/experts/index.js';
import { dispatchRegistry } from '../moe/dispatch/index.js';
import { lossRegistry } from '../moe/losses/index.js';
import { citation, type EntrySpec } from '../moe/registry.js';

function optionLines(docs: OptionDoc[], indent: string): string[] {
  return docs.map((d) => {
    const def = 'default' in d ? ` = ${showValue(d.default)}` : d.optional ? '' : ' (required)';
    return `${indent}${d.name}${def}: ${d.rule}${d.description ? `. ${d.description}` : ''}`;
  });
}

function header(s: EntrySpec): string[] {
  return [`  ${s.name}`, `    ${s.summary}`, ...(s.paper ? [`    paper: ${citation(s.paper)}`] : [])];
}

function routerTraitLines(s: RouterSpec): string[] {
  const t = s.traits;
  const out = [`routing ${t.routing}`, `experts per token: ${t.expertsPerToken}`];
  if (t.needsTokenIds) out.push('needs token ids');
  if (t.defaultDispatch) out.push('own default dispatch');
  if (t.hfConfig)
    out.push(
      `HF config: ${Object.entries(t.hfConfig)
        .map(([f, o]) => `${f} -> ${o}`)
        .join(', ')}`,
    );
  if (t.flopMatch) out.push('FLOP-matched in bench-routers by its options');
  if (t.context?.length) out.push(`reads context: ${t.context.join(', ')}`);
  const lines = [`    traits: ${out.join('; ')}`];
  if (t.batchDependent) lines.push(`    batch-dependent: ${t.batchDependent}`);
  if (t.inferenceDiffers) lines.push(`    inference differs: ${t.inferenceDiffers}`);
  return lines;
}

/** The whole listing, as printed. */
export function formatRegistries(): string {
  const out: string[] = ['routers:'];
  for (const s of routerRegistry.specs()) {
    out.push(...header(s), ...routerTraitLines(s));
    const docs = describeShape(s.options);
    out.push(docs.length ? '    options:' : '    options: none', ...optionLines(docs, '      '));
  }
  out.push('expert types:');
  for (const s of expertRegistry.specs()) {
    out.push(...header(s));
    if (s.traits.hfHiddenAct) out.push(`    traits: HF hidden_act "${s.traits.hfHiddenAct}"${s.createShared ? '; has a shared-expert form' : ''}`);
    out.push('    options:', ...optionLines(describeShape(s.options), '      '));
  }
  out.push('dispatch:');
  for (const s of dispatchRegistry.specs()) {
    out.push(...header(s), `    traits: consumes ${s.routing} routing${s.routing === 'soft' ? ' (used by soft routers, not configured)' : ''}`);
    const docs = describeShape(s.options);
    if (docs.length) out.push('    options:', ...optionLines(docs, '      '));
  }
  out.push('balancing losses:');
  for (const s of lossRegistry.specs()) {
    out.push(...header(s));
    out.push(`    model config: router_losses.${s.name}${s.configField ? ` or ${s.configField}` : ''}`);
  }
  return out.join('\n') + '\n';
}
