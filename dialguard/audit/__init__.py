"""The audit trail in PostgreSQL (issue 5, docs/AUDIT.md).

- `migrate`: numbered SQL files from sql/, roles and grants (`dialguard db migrate`);
- `records`: Redis audit stream entries -> rows (pure);
- `shipper`: the stream -> PostgreSQL, exactly once, off the call path (`dialguard audit-ship`);
- `report`: attempts, answers, denials... per campaign, agent, caller ID or reason (`dialguard report`);
- `rebuild`: Redis counters from the audit after Redis lost its data (`dialguard counters rebuild`);
- `cli`: the commands above, registered on the main `dialguard` app.
"""
