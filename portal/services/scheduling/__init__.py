"""The queue and the admitter's decisions, in one package whose modules import one way:

- `plan`: the pure plan (no DB, no clock): fair order, the held head, backfill, estimates;
- `state`: the state the plan decides on, loaded from the DB (quotas, caps, admitted and queued
  jobs, members' decayed usage), the account and user row locks, and the queue columns it writes;
- `usage`: members' decayed GPU usage (charged at admission, sampled while they hold GPUs);
- `admission`: admission of a web or API submission (`admit_submission`) and of queued jobs
  (`admit_queued`), both under the account's row lock, and `requeue`;
- `estimates`: predicted run times and starts;
- `schedule`: which accounts a pass looks at (fingerprints), for admission and for estimates,
  and the `AdmissionBackend` the syncer's admitter calls;
- `pages`: what the pages read (a job's standing, queue lengths, an account's queue).

plan <- state <- usage <- admission <- schedule; estimates and pages read state and plan.
"""
