// An example handler standing in for a call to a rate-limited API. It receives the ready
// message (job.payload, job.attempt, job.scope, ...) and an AbortSignal that fires when the
// lease is about to end: pass it on to fetch() and the like, so that cut-off work stops.
//
// Throw to report a failure (Janus schedules the retry); throw RetryAfter(seconds) when the
// API says to back off, e.g.:
//   if (response.status === 429) throw new RetryAfter(Number(response.headers.get('retry-after')));
//
// Payload of this example: { "work_ms": how long the call takes, "fail_first": how many tries
// of the job fail before one succeeds (counted by this process) }.
import { setTimeout as sleep } from 'node:timers/promises';

const tries = new Map();

export async function handle(job, { signal }) {
  const { work_ms: workMs = 50, fail_first: failFirst = 0 } = job.payload ?? {};
  const attempt = (tries.get(job.job_id) ?? 0) + 1;
  tries.set(job.job_id, attempt);
  await sleep(workMs, undefined, { signal });
  if (attempt <= failFirst) throw new Error(`simulated failure, try ${attempt} of ${failFirst} that fail`);
  tries.delete(job.job_id);
}
