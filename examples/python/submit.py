"""Submit jobs from plain (blocking) code: a script, a Django view, a cron job.

python submit.py [COUNT]
"""

import sys
import uuid

from janus.client import SyncProducer

count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
batch = uuid.uuid4().hex[:6]  # job ids are submitted once: a new batch each run
with SyncProducer() as producer:  # JANUS_AMQP_URL, or the local broker
    for n in range(1, count + 1):
        producer.submit(f"order-{batch}-{n}", "payments-api", {"order": n}, scope=f"tenant-{n % 3}")
print(f"submitted order-{batch}-1 .. order-{batch}-{count}")
