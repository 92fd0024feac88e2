// What the producer and the worker share: the names and message rules of docs/protocol.md,
// and the one wait both need (Janus declares the topology; clients only check it exists).
import { setTimeout as sleep } from 'node:timers/promises';

export const INTAKE_EXCHANGE = 'janus.intake';
export const RESULTS_EXCHANGE = 'janus.results';
export const readyQueue = (dependency) => `janus.ready.${dependency}`;

export const CONTENT_TYPE = 'application/json';
export const PERSISTENT = 2;
export const MAX_ERROR_LENGTH = 2000;
const MAX_ID_LENGTH = 200;
// The characters an identifier may not hold: control characters, line and paragraph
// separators, bidirectional overrides (docs/protocol.md, intake message).
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/** Throw a handler's RetryAfter when the dependency asked to back off (e.g. HTTP 429). */
export class RetryAfter extends Error {
  constructor(seconds, message = `retry after ${seconds}s`) {
    super(message);
    this.name = 'RetryAfter';
    this.retryAfter = seconds;
  }
}

export function nowSeconds() {
  return Date.now() / 1000;
}

/** The reason an identifier (job_id, scope) breaks the intake rules, or null. */
export function identifierProblem(value) {
  if (typeof value !== 'string') return 'must be a string';
  const length = [...value].length;
  if (length < 1 || length > MAX_ID_LENGTH) return `must be 1 to ${MAX_ID_LENGTH} characters`;
  if (FORBIDDEN.test(value)) return 'holds a control, separator or bidirectional character';
  return null;
}

/** The ready message, or a reason it cannot be used (then the worker hands it back unstarted). */
export function parseReady(content) {
  let job;
  try {
    job = JSON.parse(content.toString('utf8'));
  } catch (error) {
    return { problem: `not JSON: ${error.message}` };
  }
  if (job === null || typeof job !== 'object' || Array.isArray(job)) return { problem: 'not a JSON object' };
  for (const field of ['job_id', 'dependency', 'scope']) {
    if (typeof job[field] !== 'string') return { problem: `${field} must be a string` };
  }
  if (!Number.isInteger(job.attempt)) return { problem: 'attempt must be an integer' };
  for (const field of ['admitted_at', 'expires_at']) {
    if (typeof job[field] !== 'number') return { problem: `${field} must be a number` };
  }
  if (job.lease_expires_at != null && typeof job.lease_expires_at !== 'number') {
    return { problem: 'lease_expires_at must be a number' };
  }
  return { job };
}

/** A result message's body: one per started admission. */
export function encodeResult({ job, error = null, retryAfter = null, throttled = false, duration = null }) {
  const body = { job_id: job.job_id, attempt: job.attempt, outcome: error === null ? 'success' : 'failure' };
  if (error !== null) body.error = [...error].slice(0, MAX_ERROR_LENGTH).join('');
  if (retryAfter !== null) body.retry_after = retryAfter;
  // Adaptive limits' signals (docs/protocol.md): "slow down" on a failure, and the call's seconds.
  if (throttled && error !== null) body.throttled = true;
  if (duration !== null) body.duration = duration;
  return Buffer.from(JSON.stringify(body));
}

/**
 * Wait until `check(channel)` (a passive checkQueue or checkExchange) succeeds: Janus declares
 * what it needs when it starts, and a failed passive check closes its channel, so each try
 * gets a channel of its own.
 */
export async function waitFor(connection, check, { timeoutMs = 30000, what = 'the topology' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const channel = await connection.createChannel();
    channel.on('error', () => {}); // a 404 closes this channel: expected while Janus starts
    try {
      await check(channel);
      await channel.close();
      return;
    } catch (error) {
      if (Date.now() >= deadline) throw new Error(`${what} does not exist (is Janus running?): ${error.message}`);
    }
    await sleep(200);
  }
}
