#!/usr/bin/env node
// A Janus worker in Node.js, written from docs/protocol.md ("A worker's whole duty"):
// take an admission; if its expires_at has passed, reject it with requeue=false (it goes back
// to Janus unstarted); otherwise ack it, then run the handler, cut off before the lease ends;
// publish exactly one result per started admission, routing key = its dependency, confirmed.
//
// Run it: JANUS_DEPENDENCIES=payments-api node worker.js (the environment is in README.md).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp from 'amqplib';
import * as janus from './janus.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUILTIN_HANDLERS = {
  example: './handlers/example.js',
  conformance: './handlers/conformance.js',
};
const CUT_OFF = Symbol('cut off');
const FORGET_WITHOUT_LEASE = 60; // seconds past expires_at to remember an acked admission with no lease
const PUBLISH_TRIES = 3; // nacks of one result before giving it up (the lease then fails the attempt)
const RECONNECT_DELAYS = [0.1, 0.2, 0.5, 1, 2, 5]; // seconds between tries, the last repeated

/**
 * Consume the ready queues of `dependencies` and run `handle(job, { signal })` for each
 * admission. Returns { stop }: stop() stops taking work, lets running handlers finish and
 * report, and disconnects. A lost connection is opened again (with backoff): running
 * handlers go on, and their results are published once it is back.
 */
export async function startWorker({
  url,
  dependencies,
  handle,
  prefetch = 10,
  maxInFlight = prefetch,
  leaseMargin = 0.5,
  onRecord = () => {},
  log = (line) => console.error(line),
  name = 'janus-node-worker',
}) {
  let stopping = false;
  let session = null; // { connection, results, consumers } while connected
  let connected = deferred(); // resolves with the session once there is one
  // Admissions delivered but not started wait here, unacked, until a handler is free: the
  // expiry check happens when one is, so an admission that expired while waiting goes back.
  let waiting = [];
  const running = new Set();
  // The admissions this worker acked, until their lease ends: an ack is lost with its
  // connection if the broker had not read it, and the broker then delivers the admission
  // again (redelivered) although it started here. That copy must neither start nor go back.
  const acked = new Map(); // `${job_id}/${attempt}` -> when to forget it (seconds)

  async function open() {
    const connection = await amqp.connect(url, { clientProperties: { connection_name: name } });
    connection.on('error', () => {}); // 'close' follows with the same error
    try {
      await janus.waitFor(connection, (ch) => ch.checkExchange(janus.RESULTS_EXCHANGE), {
        what: janus.RESULTS_EXCHANGE,
      });
      for (const dependency of dependencies) {
        const queue = janus.readyQueue(dependency);
        await janus.waitFor(connection, (ch) => ch.checkQueue(queue), { what: queue });
      }
      // Results go out on a confirm channel: a result counts as sent once the broker has it.
      const results = await connection.createConfirmChannel();
      results.on('error', (error) => log(`results channel: ${error.message}`));
      const consumers = [];
      for (const dependency of dependencies) consumers.push(await consume(connection, dependency));
      const opened = { connection, results, consumers };
      connection.on('close', (error) => lost(opened, error));
      return opened;
    } catch (error) {
      connection.close().catch(() => {});
      throw error;
    }
  }

  async function consume(connection, dependency) {
    const channel = await connection.createChannel();
    channel.on('error', (error) => log(`ready channel of ${dependency}: ${error.message}`));
    await channel.prefetch(prefetch);
    const { consumerTag } = await channel.consume(janus.readyQueue(dependency), (message) => {
      if (message === null) {
        log(`the broker cancelled the consumer of ${janus.readyQueue(dependency)} (queue deleted?)`);
        return;
      }
      if (stopping) {
        channel.nack(message, false, true); // not started: back to the queue for another worker
        return;
      }
      waiting.push({ channel, message, receivedAt: janus.nowSeconds() });
      pump();
    });
    return { channel, consumerTag };
  }

  function lost(which, error) {
    if (session !== which) return;
    session = null;
    connected = deferred();
    // The broker puts unacked deliveries back in the queue: the waiting ones are not ours any more.
    waiting = [];
    if (stopping && running.size === 0) return;
    log(`connection lost (${error?.message ?? 'closed'}): opening it again`);
    reconnect();
  }

  async function reconnect() {
    for (let tries = 0; ; tries += 1) {
      try {
        session = await open();
        connected.resolve(session);
        log('connected again');
        return;
      } catch (error) {
        const delay = RECONNECT_DELAYS[Math.min(tries, RECONNECT_DELAYS.length - 1)];
        log(`cannot connect (${error.message}): trying again in ${delay}s`);
        await sleep(delay * 1000);
      }
    }
  }

  function record(job, fields) {
    onRecord({
      job_id: job.job_id,
      dependency: job.dependency,
      scope: job.scope,
      attempt: job.attempt,
      admitted_at: job.admitted_at,
      expires_at: job.expires_at,
      lease_expires_at: job.lease_expires_at ?? null,
      started_at: null,
      finished_at: null,
      error: null,
      ...fields,
    });
  }

  function remember(key, job) {
    const now = janus.nowSeconds();
    // Oldest first: forget what is past its lease (a later copy can no longer free a held slot).
    for (const [old, forgetAt] of acked) {
      if (forgetAt > now) break;
      acked.delete(old);
    }
    acked.set(key, job.lease_expires_at ?? job.expires_at + FORGET_WITHOUT_LEASE);
  }

  function pump() {
    while (running.size < maxInFlight && waiting.length > 0) {
      const { channel, message, receivedAt } = waiting.shift();
      const { job, problem } = janus.parseReady(message.content);
      if (problem !== undefined) {
        log(`unreadable admission handed back to Janus: ${problem}`);
        channel.reject(message, false);
        continue;
      }
      const key = `${job.job_id}/${job.attempt}`;
      if (message.fields.redelivered && acked.has(key)) {
        // Before the expiry check: handed back, it would free a slot its first copy holds.
        channel.ack(message);
        log(`${key} delivered again after its ack was lost: it already started here`);
        continue;
      }
      if (janus.nowSeconds() >= job.expires_at) {
        channel.reject(message, false); // dead-letters to Janus: slot freed, no attempt charged
        record(job, { received_at: receivedAt, outcome: 'expired' });
        continue;
      }
      channel.ack(message);
      remember(key, job);
      const task = run(job, receivedAt).finally(() => {
        running.delete(task);
        pump();
      });
      running.add(task);
    }
  }

  async function run(job, receivedAt) {
    await ackSent();
    const startedAt = janus.nowSeconds();
    if (startedAt >= job.expires_at) {
      // Acked, so it cannot go back: report it failed, unstarted (it expired during the ack).
      const error = 'expired before it could start';
      record(job, { received_at: receivedAt, finished_at: startedAt, outcome: 'failure', error });
      await publishResult(job, janus.encodeResult({ job, error }));
      return;
    }
    const controller = new AbortController();
    let timer;
    const cutOff = new Promise((resolve) => {
      if (job.lease_expires_at == null) return;
      // Report before Janus stops waiting, with room for the publish and its confirm.
      const budget = (job.lease_expires_at - leaseMargin - startedAt) * 1000;
      timer = setTimeout(resolve, Math.max(0, budget), CUT_OFF);
    });
    let error = null;
    let retryAfter = null;
    try {
      const work = Promise.resolve().then(() => handle(job, { signal: controller.signal }));
      if ((await Promise.race([work, cutOff])) === CUT_OFF) {
        controller.abort(); // a handler that honours the signal stops; its late end changes nothing
        work.catch(() => {});
        error = 'handler did not finish before its lease ended';
      }
    } catch (thrown) {
      error = describe(thrown);
      retryAfter = retryAfterOf(thrown);
    } finally {
      clearTimeout(timer);
    }
    const finishedAt = janus.nowSeconds();
    record(job, {
      received_at: receivedAt,
      started_at: startedAt,
      finished_at: finishedAt,
      outcome: error === null ? 'success' : 'failure',
      error,
    });
    // A retry_after is the dependency saying "slow down": throttled, as the Python SDK reports it.
    const throttled = retryAfter !== null;
    const duration = Math.max(0, finishedAt - startedAt);
    await publishResult(job, janus.encodeResult({ job, error, retryAfter, throttled, duration }));
  }

  function publishOn(results, job, body) {
    return new Promise((resolve, reject) => {
      const options = { contentType: janus.CONTENT_TYPE, deliveryMode: janus.PERSISTENT };
      results.publish(janus.RESULTS_EXCHANGE, job.dependency, body, options, (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }

  async function publishResult(job, body) {
    // Until one copy is confirmed: again after a nack, and again over the next connection if
    // this one is lost before the confirm. The broker may have taken an earlier copy: Janus
    // applies one and sets the others aside, harmlessly. Given up after a few nacks, the
    // attempt fails when its lease ends.
    for (let nacks = 0; ; ) {
      const current = await connected.promise;
      try {
        return await publishOn(current.results, job, body);
      } catch (error) {
        if (session !== current) continue; // lost with the connection: publish again on the next
        nacks += 1;
        if (nacks >= PUBLISH_TRIES) {
          log(`result of ${job.job_id} attempt ${job.attempt} not published: ${error.message}`);
          return;
        }
      }
    }
  }

  async function stop() {
    if (stopping) return;
    stopping = true;
    const current = session;
    if (current !== null) {
      await Promise.allSettled(current.consumers.map(({ channel, consumerTag }) => channel.cancel(consumerTag)));
    }
    // Not started: back to the queue for another worker (closing the channels would do the same).
    for (const { channel, message } of waiting.splice(0)) channel.nack(message, false, true);
    while (running.size > 0) await Promise.allSettled([...running]);
    const last = session;
    session = null;
    if (last !== null) await last.connection.close();
  }

  session = await open();
  connected.resolve(session);
  return { stop };
}

function deferred() {
  let resolve;
  const promise = new Promise((settle) => {
    resolve = settle;
  });
  return { promise, resolve };
}

// amqplib queues frames and writes them to the socket from a setImmediate callback: two turns
// of the event loop let the ack leave the process before the work starts.
function ackSent() {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}

function describe(thrown) {
  if (thrown instanceof Error) return `${thrown.name}: ${thrown.message}`;
  return String(thrown);
}

// Any error with a numeric `retryAfter` (janus.RetryAfter, or a handler's own) asks to back off.
function retryAfterOf(thrown) {
  const seconds = thrown?.retryAfter;
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

export async function loadHandler(spec) {
  const target = BUILTIN_HANDLERS[spec] ? path.join(HERE, BUILTIN_HANDLERS[spec]) : path.resolve(spec);
  const module = await import(pathToFileURL(target).href);
  const handle = module.handle ?? module.default;
  if (typeof handle !== 'function') throw new Error(`${target} exports no handle(job, { signal }) function`);
  return handle;
}

function positive(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
}

async function main() {
  const dependencies = (process.env.JANUS_DEPENDENCIES ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  if (dependencies.length === 0) throw new Error('JANUS_DEPENDENCIES: name at least one dependency (comma-separated)');
  const prefetch = positive('JANUS_PREFETCH', 10);
  const records = process.env.JANUS_RECORDS;
  const worker = await startWorker({
    url: process.env.JANUS_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/',
    dependencies,
    handle: await loadHandler(process.env.JANUS_HANDLER || 'example'),
    prefetch,
    maxInFlight: positive('JANUS_MAX_IN_FLIGHT', prefetch),
    leaseMargin: positive('JANUS_LEASE_MARGIN', 0.5),
    // One JSON line per admission seen, written whole (appendFileSync) so that a reader never
    // sees half a record.
    onRecord: records ? (entry) => fs.appendFileSync(records, `${JSON.stringify(entry)}\n`) : undefined,
  });
  console.error(`janus node worker: consuming ${dependencies.map(janus.readyQueue).join(', ')}`);
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      worker.stop().then(
        () => process.exit(0),
        (error) => {
          console.error(`janus node worker: stopping failed: ${error.message}`);
          process.exit(1);
        },
      );
    });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(`janus node worker: ${error.message}`);
    process.exit(1);
  });
}
