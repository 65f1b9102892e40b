// The bench-routers verdict in the terminal (issue 10): the report's recommendation sentence, or
// its "no recommendation" one for an undertrained smoke run, so a user who never opens the HTML
// page is not left with bare losses that look like a ranking.
import type { BenchAnalysis } from '../bench-routers/types.js';

/** The first "Recommendation" / "No recommendation" sentence of the analysis, markdown emphasis removed; null when there is none. */
export function benchVerdict(a: Pick<BenchAnalysis, 'recommendation'>): string | null {
  const line = a.recommendation.find((s) => /^\*\*(No r|R)ecommendation/.test(s));
  return line === undefined ? null : line.replace(/\*\*/g, '');
}
