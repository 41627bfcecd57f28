"""kill -9 under load on the embedded default (one instance, SQLite): every call answered before the kill
has its audit record after the restart (the record is on disk before the result leaves), the database
passes SQLite's integrity check, the audit chain and its checkpoint verify, and the restarted server
answers. (The PostgreSQL cluster version of this test is in test_scale_out.py.)"""
import asyncio
import json
import os
import signal
import time

from harness import ARTIFACTS, HostedVault, structured


def test_kill_9_under_load_loses_no_audit_row_on_sqlite(provider):
    v = HostedVault(provider, identity="local")
    v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
          input=provider.client_credentials_token() + "\n")
    v.start()
    answered: list[str] = []
    failures: list[str] = []
    killed_at = [0.0]
    args = {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"}

    async def worker():
        try:
            async with v.http_session(None) as s:
                while not killed_at[0]:
                    out = structured(await s.call_tool("vault_request", args))
                    if out.get("status") == 200:
                        answered.append(out["call_id"])
                    else:
                        failures.append(out.get("error", "?"))
        except BaseException as e:  # the connection dies with the process
            if not killed_at[0]:
                failures.append(type(e).__name__)

    async def killer():
        await asyncio.sleep(3)
        os.kill(v.proc.pid, signal.SIGKILL)
        killed_at[0] = time.time()

    async def go():
        await asyncio.gather(killer(), *[worker() for _ in range(8)], return_exceptions=True)

    try:
        asyncio.run(go())
        v.proc.wait(10)
        assert v.proc.returncode == -signal.SIGKILL
        assert len(answered) > 100, (len(answered), failures[:5])
        assert not failures, failures[:5]
        ids = {r[0] for r in v.sqlite("SELECT id FROM audit_log WHERE event = 'request'")}
        lost = [i for i in answered if i not in ids]
        assert not lost, f"{len(lost)} of {len(answered)} answered calls have no audit record"
        assert v.sqlite("PRAGMA integrity_check") == [("ok",)]
        verify = v.cli("audit", "verify")
        assert verify.stdout.startswith("ok:"), verify.stdout

        v.start()  # the same data directory, after the crash

        async def after():
            async with v.http_session(None) as s:
                return [structured(await s.call_tool("vault_request", args)) for _ in range(3)]
        assert all(o.get("status") == 200 for o in asyncio.run(after()))
        assert v.cli("audit", "verify").stdout.startswith("ok:")
        (ARTIFACTS / "sqlite-kill9.json").write_text(json.dumps(
            {"answered_before_kill": len(answered), "lost_audit_rows": len(lost), "integrity": "ok"}))
    finally:
        v.stop()
        v.cleanup()
