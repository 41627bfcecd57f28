"""A real AWS Signature Version 4 verifier for the end-to-end tests: moto's S3 server (PyPI `moto[server]`)
on loopback with its IAM authentication checks on.

moto_server starts with authentication off (settings.INITIAL_NO_AUTH_ACTION_COUNT is infinite unless the
environment variable of that name says otherwise). We create the IAM user, its access key, an inline policy
allowing S3 reads, a bucket and an object while it is off, then switch it on with moto's own admin endpoint
`POST /moto-api/reset-auth` with body `0` (what moto's `set_initial_no_auth_action_count(0)` decorator does in
server mode): from then on every S3 request must carry a valid SigV4 signature of a known access key whose
IAM policy allows the action, or moto answers 403 (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied).
`check()` proves that before any test relies on it.

Usage:
    s3 = MotoS3().start()      # s3.port, s3.host ("127.0.0.1:PORT"), s3.key_id, s3.secret, s3.url
    ...                        # GET s3.url (path-style http://127.0.0.1:PORT/<bucket>/<key>), region us-east-1
    s3.stop()
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import free_port, wait_port

REGION = "us-east-1"
BUCKET = "vault-e2e-bucket"
KEY = "reports/hello.txt"
BODY = b"hello from moto, signed by the vault\n"


class MotoS3:
    def __init__(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.endpoint = f"http://{self.host}"
        self.bucket, self.key, self.body, self.region = BUCKET, KEY, BODY, REGION
        self.url = f"{self.endpoint}/{BUCKET}/{KEY}"
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None
        self.key_id = self.secret = ""
        self.session: dict | None = None  # STS temporary credentials, see session_credentials()

    def start(self) -> "MotoS3":
        self.dir = Path(tempfile.mkdtemp(prefix="vault-e2e-moto-"))
        log = open(self.dir / "moto.log", "a")
        exe = Path(sys.executable).with_name("moto_server")
        env = dict(os.environ, AWS_DEFAULT_REGION=REGION)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # setup runs with auth off; reset-auth turns it on
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=30)
        self._setup()
        return self

    def _client(self, service: str, key_id: str = "setup", secret: str = "setup", token: str | None = None):
        import boto3
        from botocore.config import Config
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, aws_access_key_id=key_id,
                            aws_secret_access_key=secret, aws_session_token=token,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def _setup(self) -> None:
        iam = self._client("iam")
        user_arn = iam.create_user(UserName="vault-e2e")["User"]["Arn"]
        iam.put_user_policy(UserName="vault-e2e", PolicyName="s3-read", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "sts:AssumeRole"],
                           "Resource": "*"}]}))
        k = iam.create_access_key(UserName="vault-e2e")["AccessKey"]
        self.key_id, self.secret = k["AccessKeyId"], k["SecretAccessKey"]
        # a role the user may assume, for temporary credentials with a session token (moto checks the
        # X-Amz-Security-Token of assumed-role credentials against the one it issued)
        self.role_arn = iam.create_role(RoleName="vault-e2e-reader", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                           "Principal": {"AWS": user_arn}}]}))["Role"]["Arn"]
        iam.put_role_policy(RoleName="vault-e2e-reader", PolicyName="s3-read", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
        s3 = self._client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=BODY, ContentType="text/plain")
        self.auth(True)

    def auth(self, on: bool) -> None:
        """Turn moto's authentication checks on (every request from now on) or off."""
        import requests
        r = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf", timeout=10)
        r.raise_for_status()

    def session_credentials(self) -> dict:
        """Temporary credentials (AccessKeyId ASIA…, SecretAccessKey, SessionToken) from moto's STS AssumeRole,
        for the session-token case; fetched once, signed with the user's long-term key. (moto does not
        recognize GetSessionToken credentials when verifying signatures; assumed-role ones it does.)"""
        if self.session is None:
            sts = self._client("sts", self.key_id, self.secret)
            self.session = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="vault-e2e",
                                           DurationSeconds=3600)["Credentials"]
        return self.session

    def signed_get(self, key_id: str, secret: str, token: str | None = None, url: str | None = None,
                   content_sha256: bool = True):
        """GET `url` (default: the object) path-style over plain http, signed the way a SigV4 library does.
        content_sha256=False signs with the generic SigV4 signer (no x-amz-content-sha256 header)."""
        import requests
        from botocore.auth import S3SigV4Auth, SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        req = AWSRequest(method="GET", url=url or self.url)
        signer = S3SigV4Auth if content_sha256 else SigV4Auth
        signer(Credentials(key_id, secret, token), "s3", REGION).add_auth(req)
        return requests.get(req.url, headers=dict(req.headers.items()), timeout=10)

    def check(self) -> dict:
        """Prove the verifier verifies: returns {case: (status, aws error code)}; raises if it does not."""
        import re
        import requests

        def code(r):
            m = re.search(r"<Code>([^<]+)</Code>", r.text)
            return m.group(1) if m else ""
        sess = self.session_credentials()
        results = {
            "correct key": self.signed_get(self.key_id, self.secret),
            "correct key, generic SigV4 signer (no x-amz-content-sha256)": self.signed_get(
                self.key_id, self.secret, content_sha256=False),
            "wrong secret": self.signed_get(self.key_id, self.secret[:-4] + "AAAA"),
            "unknown access key id": self.signed_get("AKIAIOSFODNN7EXAMPLE", self.secret),
            "unsigned": requests.get(self.url, timeout=10),
            "session credentials": self.signed_get(sess["AccessKeyId"], sess["SecretAccessKey"], sess["SessionToken"]),
            "session credentials, wrong token": self.signed_get(sess["AccessKeyId"], sess["SecretAccessKey"],
                                                                 sess["SessionToken"][:-6] + "AAAAAA"),
            "session credentials, no token": self.signed_get(sess["AccessKeyId"], sess["SecretAccessKey"]),
        }
        out = {k: (r.status_code, code(r)) for k, r in results.items()}
        assert results["correct key"].status_code == 200 and results["correct key"].content == BODY, out
        assert out["wrong secret"] == (403, "SignatureDoesNotMatch"), out
        assert out["unknown access key id"][0] == 403, out
        assert out["unsigned"][0] == 403, out
        assert out["session credentials"][0] == 200, out
        # a wrong token: 400 InvalidToken (as S3 answers a malformed one); no token: 403 InvalidAccessKeyId
        assert out["session credentials, wrong token"][0] in (400, 403) and out["session credentials, no token"][0] == 403, out
        return out

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    s = MotoS3().start()
    try:
        for case, result in s.check().items():
            print(f"{case}: {result}")
    finally:
        s.stop()
