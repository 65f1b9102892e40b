/**
 * Pre-tokenisation patterns come from files (tokenizer JSON, checkpoint state) and run over the
 * whole corpus with a backtracking engine, so a hostile pattern such as `(\p{L}+)+x` would hang
 * training, eval and generation. Instead of trusting them, patterns are parsed
 * (@eslint-community/regexpp) and restricted to a shape without catastrophic backtracking:
 * repetition (`*`, `+`, `{n,m}` with m > 1) only of single characters or character classes (no
 * repeated groups, hence no nested quantifiers or repeated alternations), no backreferences or
 * lookbehind, at most MAX_REPEATS repetitions per branch and MAX_PATTERN_LENGTH characters. The
 * GPT-2, Llama 3 and Qwen2 pre-tokenisers fit; see "Regular expression denial of service"
 * (OWASP) for the failure mode.
 */
import { RegExpParser, type AST } from '@eslint-community/regexpp';

export const MAX_PATTERN_LENGTH = 1024;
/** Repeated atoms in one branch (each one multiplies the backtracking of the others). */
export const MAX_REPEATS = 3;

export class UnsafePatternError extends Error {}

const parser = new RegExpParser({ ecmaVersion: 2024 });

function isSingleChar(e: AST.QuantifiableElement): boolean {
  return e.type === 'Character' || e.type === 'CharacterSet' || e.type === 'CharacterClass' || e.type === 'ExpressionCharacterClass';
}

/** Throws UnsafePatternError (message without a prefix: callers name the field) unless `src` is safe to run on any text. */
export function checkSafePattern(src: string): void {
  if (src.length > MAX_PATTERN_LENGTH) throw new UnsafePatternError(`is ${src.length} characters long, more than the limit of ${MAX_PATTERN_LENGTH}`);
  let ast: AST.Pattern;
  try {
    ast = parser.parsePattern(src, 0, src.length, { unicode: true });
  } catch (e) {
    throw new UnsafePatternError(`is not a valid regular expression: ${(e as Error).message}`);
  }
  const at = (n: AST.Node): string => `at offset ${n.start} ("${n.raw.length > 24 ? n.raw.slice(0, 24) + '...' : n.raw}")`;
  /** Returns the number of repeated atoms on the path through this alternative. */
  const alternative = (alt: AST.Alternative): number => {
    let repeats = 0;
    for (const el of alt.elements) repeats += element(el);
    if (repeats > MAX_REPEATS) throw new UnsafePatternError(`has ${repeats} repeated parts in one branch ${at(alt)}; at most ${MAX_REPEATS} are allowed`);
    return repeats;
  };
  const alternatives = (alts: AST.Alternative[]): number => Math.max(0, ...alts.map(alternative));
  const element = (el: AST.Element): number => {
    switch (el.type) {
      case 'Quantifier': {
        if (el.max > 1) {
          if (!isSingleChar(el.element)) throw new UnsafePatternError(`repeats a group ${at(el)}: only single characters and character classes may be repeated (nested repetition can take exponential time)`);
          return 1;
        }
        return element(el.element);
      }
      case 'Backreference':
        throw new UnsafePatternError(`uses a backreference ${at(el)}`);
      case 'Assertion':
        if (el.kind === 'lookbehind') throw new UnsafePatternError(`uses a lookbehind ${at(el)}`);
        if (el.kind === 'lookahead') return alternatives(el.alternatives);
        return 0;
      case 'Group':
      case 'CapturingGroup':
        return alternatives(el.alternatives);
      default:
        return 0;
    }
  };
  alternatives(ast.alternatives);
}
