/**
 * Machine description and the JSON results file of a suite: bench/results/<suite>.json, written
 * atomically (temp file + rename, src/io/atomic.ts) so a run killed mid-write never leaves a
 * truncated file for later comparisons to choke on.
 */
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { writeJsonAtomicSync } from '../../src/io/atomic.js';

export interface MachineInfo {
  cpu: string;
  cores: number;
  availableParallelism: number;
  totalMemGiB: number;
  /** 1/5/15-minute load averages at start: a busy shared machine explains noisy numbers. */
  loadavg: number[];
  platform: string;
  arch: string;
  node: string;
  v8: string;
  date: string;
  gitCommit: string | null;
}

function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || null;
  } catch {
    return null;
  }
}

export function machineInfo(now: Date = new Date()): MachineInfo {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model?.trim() || 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    totalMemGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    platform: os.platform(),
    arch: os.arch(),
    node: process.version,
    v8: process.versions.v8,
    date: now.toISOString(),
    gitCommit: gitCommit(),
  };
}

export function formatMachine(m: MachineInfo): string {
  return `${m.cpu}, ${m.cores} cores (${m.availableParallelism} available), node ${m.node}, ${m.platform}/${m.arch}, load ${m.loadavg.join(' ')}, ${m.date}${m.gitCommit ? `, commit ${m.gitCommit}` : ''}`;
}

const SUITE_NAME = /^[a-z0-9][a-z0-9_-]*$/i;

export function resultsPath(dir: string, suite: string): string {
  if (!SUITE_NAME.test(suite)) throw new Error(`results: suite name "${suite}" must match ${SUITE_NAME} (it becomes a file name)`);
  return path.join(dir, `${suite}.json`);
}

export interface SuiteResults {
  suite: string;
  machine: MachineInfo;
  options: Record<string, unknown>;
  durationS: number;
  rows: Record<string, unknown>[];
  tables?: { title: string; rows: Record<string, unknown>[] }[];
}

/** Write `<dir>/<suite>.json` atomically; returns the path written. */
export function writeSuiteResults(dir: string, results: SuiteResults): string {
  const file = resultsPath(dir, results.suite);
  writeJsonAtomicSync(file, results);
  return file;
}
