#!/usr/bin/env node
// A Janus producer in Node.js, written from docs/protocol.md ("Intake message"): it publishes
// job references to janus.intake, routing key = dependency, with publisher confirms and
// mandatory=true.
//
// With amqplib a confirm alone does not report an unroutable publish: the broker hands the
// message back (basic.return) and then confirms it all the same. So a submit succeeds only if
// its publish is confirmed and was not returned; a returned one is an error the caller sees.
//
// Run it: one intake message per line on stdin (README.md).
//   echo '{"job_id": "order-42", "dependency": "payments-api"}' | node producer.js
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import * as janus from './janus.js';

/** The publish reached no queue (Janus has not declared its intake queue yet, or it is gone). */
export class Unroutable extends Error {}

export class Producer {
  #returned = new Map(); // message_id -> returns not yet matched with their confirm

  static async connect(url, { name = 'janus-node-producer' } = {}) {
    const connection = await amqp.connect(url, { clientProperties: { connection_name: name } });
    await janus.waitFor(connection, (ch) => ch.checkExchange(janus.INTAKE_EXCHANGE), {
      what: janus.INTAKE_EXCHANGE,
    });
    return new Producer(connection, await connection.createConfirmChannel());
  }

  constructor(connection, channel) {
    this.connection = connection;
    this.channel = channel;
    // The broker sends basic.return before the confirm of the same message, and amqplib handles
    // frames in order: when a confirm arrives, the return of that message (if any) is counted.
    channel.on('return', (message) => {
      const id = message.properties.messageId;
      this.#returned.set(id, (this.#returned.get(id) ?? 0) + 1);
    });
    channel.on('error', () => {}); // a closed channel fails the pending submits with its error
  }

  /** Publish one job; resolves once the broker confirmed it and a queue took it. Safe to repeat. */
  submit({ job_id: jobId, dependency, scope = 'default', payload }) {
    for (const [field, value] of [
      ['job_id', jobId],
      ['dependency', dependency],
      ['scope', scope],
    ]) {
      const problem = janus.identifierProblem(value);
      if (problem !== null) return Promise.reject(new TypeError(`${field} ${problem}`));
    }
    const message = { job_id: jobId, dependency, scope };
    if (payload !== undefined) message.payload = payload;
    const body = Buffer.from(JSON.stringify(message));
    const options = {
      contentType: janus.CONTENT_TYPE,
      deliveryMode: janus.PERSISTENT,
      messageId: jobId,
      mandatory: true,
    };
    return new Promise((resolve, reject) => {
      this.channel.publish(janus.INTAKE_EXCHANGE, dependency, body, options, (error) => {
        const returns = this.#returned.get(jobId) ?? 0;
        if (returns > 0) {
          if (returns === 1) this.#returned.delete(jobId);
          else this.#returned.set(jobId, returns - 1);
          reject(new Unroutable(`no queue took it (is Janus running, with ${dependency} configured?)`));
        } else if (error) {
          reject(new Error(`the broker refused it: ${error.message ?? error}`));
        } else {
          resolve();
        }
      });
    });
  }

  async close() {
    await this.connection.close();
  }
}

async function main() {
  const window = Number(process.env.JANUS_PUBLISH_WINDOW || 100);
  const producer = await Producer.connect(process.env.JANUS_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/');
  const inFlight = new Set();
  const failed = [];
  let published = 0;
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    let job;
    try {
      job = JSON.parse(line);
    } catch (error) {
      failed.push({ line, error: `not JSON: ${error.message}` });
      continue;
    }
    const submit = producer.submit(job).then(
      () => {
        published += 1;
      },
      (error) => {
        failed.push({ job_id: job.job_id, error: error.message, unroutable: error instanceof Unroutable });
      },
    );
    const tracked = submit.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    if (inFlight.size >= window) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await producer.close();
  console.log(JSON.stringify({ published, failed }));
  for (const { job_id: jobId, line, error } of failed) console.error(`not published: ${jobId ?? line}: ${error}`);
  return failed.length === 0 ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (error) => {
      console.error(`janus node producer: ${error.message}`);
      process.exit(1);
    },
  );
}
