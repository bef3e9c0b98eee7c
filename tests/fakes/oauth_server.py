"""A real OAuth 2.1 authorization server for tests, built with authlib's Flask integration and
served over HTTP on 127.0.0.1 from a thread of the test process.

It publishes RFC 8414 metadata, registers clients dynamically (RFC 7591), issues codes only with
PKCE S256 and approves every authorization at once for one fixed user, rotates refresh tokens,
revokes (RFC 7009) and introspects (RFC 7662; for the MCP server, which authenticates as the
confidential client ``resource_server``). Tests change its state only as its operator would:
``expire_access_tokens`` and ``revoke_refresh_tokens`` act on the stored tokens.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.authorization_server import create_token_generator
from authlib.integrations.sqla_oauth2 import (
    OAuth2AuthorizationCodeMixin,
    OAuth2ClientMixin,
    OAuth2TokenMixin,
    create_query_client_func,
    create_revocation_endpoint,
    create_save_token_func,
)
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask, jsonify
from sqlalchemy import Column, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import StaticPool
from werkzeug.serving import BaseWSGIServer, make_server

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
USER_ID = "test-user"
RESOURCE_SERVER_ID = "resource_server"


class Base(DeclarativeBase):
    pass


class Client(Base, OAuth2ClientMixin):
    __tablename__ = "clients"
    id = Column(Integer, primary_key=True)


class AuthorizationCode(Base, OAuth2AuthorizationCodeMixin):
    __tablename__ = "codes"
    id = Column(Integer, primary_key=True)
    user_id = Column(String(64))


class Token(Base, OAuth2TokenMixin):
    __tablename__ = "tokens"
    id = Column(Integer, primary_key=True)
    user_id = Column(String(64))


class User:
    def __init__(self, user_id: str) -> None:
        self.id = user_id

    def get_user_id(self) -> str:
        return self.id


class FakeAuthorizationServer:
    def __init__(self, access_token_seconds: int = 3600) -> None:
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        Base.metadata.create_all(engine)
        self.db = Session(engine)
        self.lock = threading.Lock()
        self.resource_server_secret = secrets.token_urlsafe(24)
        self.registrations: list[dict[str, Any]] = []
        self.revocations: list[str] = []
        self.access_token_seconds = access_token_seconds
        self.app = self._app()
        self._server: BaseWSGIServer | None = None
        self.url = ""

    # --- operator actions for tests -------------------------------------------------------------

    def expire_access_tokens(self) -> int:
        """Every access token issued so far is past its lifetime (refresh tokens stay valid)."""
        with self.lock:
            tokens = self.db.query(Token).all()
            for token in tokens:
                token.issued_at = int(time.time()) - int(token.expires_in) - 10
            self.db.commit()
            return len(tokens)

    def revoke_refresh_tokens(self) -> int:
        with self.lock:
            now = int(time.time())
            tokens = self.db.query(Token).filter(Token.refresh_token_revoked_at == 0).all()
            for token in tokens:
                token.refresh_token_revoked_at = now
            self.db.commit()
            return len(tokens)

    def add_confidential_client(self, redirect_uri: str) -> tuple[str, str]:
        """A client registered by hand, as an operator would for a server without DCR."""
        client_id, secret = f"preset-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        client = Client(client_id=client_id, client_secret=secret, client_id_issued_at=int(time.time()))
        client.set_client_metadata(
            {
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )
        with self.lock:
            self.db.add(client)
            self.db.commit()
        return client_id, secret

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token issued so far."""
        with self.lock:
            return [
                value
                for token in self.db.query(Token).all()
                for value in (token.access_token, token.refresh_token)
                if value
            ]

    def token_count(self, *, active: bool) -> int:
        with self.lock:
            tokens = self.db.query(Token).all()
            return sum(1 for t in tokens if (not t.is_revoked() and not t.is_expired()) == active)

    # --- the server ------------------------------------------------------------------------------

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server("127.0.0.1", 0, self._locked(self.app), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self.app.config["ISSUER"] = self.url
        threading.Thread(target=self._server.serve_forever, name="fake-oauth", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _locked(self, app: Flask) -> Any:
        # One SQLite session serves every request: one request at a time touches it.
        def wsgi(environ: Any, start_response: Any) -> Any:
            with self.lock:
                return list(app(environ, start_response))

        return wsgi

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "registration_endpoint": f"{self.url}/register",
            "revocation_endpoint": f"{self.url}/revoke",
            "introspection_endpoint": f"{self.url}/introspect",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "scopes_supported": ["tools"],
        }

    def _app(self) -> Flask:
        app = Flask("fake-oauth")
        db, fake = self.db, self
        server = AuthorizationServer(
            app,
            query_client=create_query_client_func(db, Client),
            save_token=create_save_token_func(db, Token),
        )

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

            def save_authorization_code(self, code: str, req: Any) -> None:
                db.add(
                    AuthorizationCode(
                        code=code,
                        client_id=req.client.client_id,
                        redirect_uri=req.payload.redirect_uri,
                        scope=req.scope,
                        user_id=req.user.get_user_id(),
                        code_challenge=req.payload.data.get("code_challenge"),
                        code_challenge_method=req.payload.data.get("code_challenge_method"),
                    )
                )
                db.commit()

            def query_authorization_code(self, code: str, client: Any) -> Any:
                item = db.query(AuthorizationCode).filter_by(code=code, client_id=client.client_id).first()
                return item if item and not item.is_expired() else None

            def delete_authorization_code(self, authorization_code: Any) -> None:
                db.delete(authorization_code)
                db.commit()

            def authenticate_user(self, authorization_code: Any) -> User:
                return User(authorization_code.user_id)

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Any:
                item = db.query(Token).filter_by(refresh_token=refresh_token).first()
                return item if item and not item.refresh_token_revoked_at else None

            def authenticate_user(self, credential: Any) -> User:
                return User(credential.user_id)

            def revoke_old_credential(self, credential: Any) -> None:
                now = int(time.time())
                credential.access_token_revoked_at = now
                credential.refresh_token_revoked_at = now
                db.commit()

        class Revocation(create_revocation_endpoint(db, Token)):  # type: ignore[misc]
            CLIENT_AUTH_METHODS = AUTH_METHODS

            def revoke_token(self, token: Any, req: Any) -> None:
                fake.revocations.append(req.form.get("token_type_hint") or "")
                super().revoke_token(token, req)

        class Introspection(IntrospectionEndpoint):
            def query_token(self, token: str, token_type_hint: str | None) -> Any:
                return db.query(Token).filter_by(access_token=token).first()

            def introspect_token(self, token: Any) -> dict[str, Any]:
                return {
                    "active": True,
                    "client_id": token.client_id,
                    "token_type": token.token_type,
                    "sub": token.user_id,
                    "scope": token.scope,
                    "iss": fake.url,
                    "exp": token.issued_at + token.expires_in,
                    "iat": token.issued_at,
                }

            def check_permission(self, token: Any, client: Any, req: Any) -> bool:
                return bool(client.client_id == RESOURCE_SERVER_ID)

        class Registration(ClientRegistrationEndpoint):
            def authenticate_token(self, req: Any) -> bool:
                return True  # open registration, as MCP clients expect

            def resolve_public_key(self, req: Any) -> None:
                return None

            def generate_client_secret(self, req: Any) -> str | None:
                method = (req.payload.data or {}).get("token_endpoint_auth_method")
                return None if method == "none" else secrets.token_urlsafe(24)

            def get_server_metadata(self) -> dict[str, Any]:
                return fake.metadata()

            def save_client(
                self, client_info: dict[str, Any], client_metadata: dict[str, Any], req: Any
            ) -> Any:
                client = Client(**client_info)
                client.set_client_metadata(client_metadata)
                db.add(client)
                db.commit()
                fake.registrations.append(client_metadata)
                return client

        # Access tokens live ``access_token_seconds``, read at issue time so a test can shorten it.
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=create_token_generator(True, 42),
                refresh_token_generator=create_token_generator(True, 48),
                expires_generator=lambda client, grant_type: fake.access_token_seconds,
            ),
        )
        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_endpoint(Revocation)
        server.register_endpoint(Introspection)
        server.register_endpoint(Registration)
        resource_server = Client(
            client_id=RESOURCE_SERVER_ID,
            client_secret=self.resource_server_secret,
            client_id_issued_at=int(time.time()),
        )
        resource_server.set_client_metadata({"token_endpoint_auth_method": "client_secret_basic"})
        db.add(resource_server)
        db.commit()

        @app.get("/.well-known/oauth-authorization-server")
        def metadata() -> Any:
            return jsonify(fake.metadata())

        @app.get("/authorize")
        def authorize() -> Any:
            # Approved at once: the test plays a user who always says yes.
            return server.create_authorization_response(grant_user=User(USER_ID))

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        @app.post("/revoke")
        def revoke() -> Any:
            return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

        @app.post("/introspect")
        def introspect() -> Any:
            return server.create_endpoint_response(Introspection.ENDPOINT_NAME)

        @app.post("/register")
        def register() -> Any:
            return server.create_endpoint_response(Registration.ENDPOINT_NAME)

        @app.errorhandler(Exception)
        def fail(exc: Exception) -> Any:
            app.logger.exception("fake OAuth server error")
            return jsonify({"error": "server_error", "error_description": str(exc)}), 500

        return app
