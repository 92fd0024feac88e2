// The handler `janus conformance` runs a worker with (JANUS_HANDLER=conformance): it obeys the
// instructions the harness puts in the payload, and notes each start in JANUS_CONFORMANCE_LOG
// so that the harness can tell a handler that ran from one that did not (docs/protocol.md,
// "Conformance").
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { nowSeconds, RetryAfter } from '../janus.js';

export async function handle(job, { signal }) {
  const log = process.env.JANUS_CONFORMANCE_LOG;
  if (log) {
    const line = { job_id: job.job_id, attempt: job.attempt, started_at: nowSeconds() };
    fs.appendFileSync(log, `${JSON.stringify(line)}\n`);
  }
  const steps = job.payload?.conformance ?? {};
  if (steps.sleep) await sleep(steps.sleep * 1000, undefined, { signal });
  if (steps.retry_after != null) throw new RetryAfter(steps.retry_after, steps.error ?? 'instructed to back off');
  if (steps.outcome === 'failure') throw new Error(steps.error ?? 'instructed to fail');
}
