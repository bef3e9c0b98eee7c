-- Generated from schemas/rls.py (python -m schemas.rls); the migration applies the same.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentapi_app') THEN
    CREATE ROLE agentapi_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  ELSE
    ALTER ROLE agentapi_app LOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION app_org_id() RETURNS uuid LANGUAGE sql STABLE AS
  $$ SELECT NULLIF(current_setting('app.org_id', true), '')::uuid $$;

CREATE OR REPLACE FUNCTION app_user_id() RETURNS uuid LANGUAGE sql STABLE AS
  $$ SELECT NULLIF(current_setting('app.user_id', true), '')::uuid $$;

CREATE OR REPLACE FUNCTION app_role() RETURNS text LANGUAGE sql STABLE AS
  $$ SELECT COALESCE(NULLIF(current_setting('app.role', true), ''), 'none') $$;

CREATE OR REPLACE FUNCTION app_is_org_admin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() IN ('admin', 'owner', 'superadmin') $$;

CREATE OR REPLACE FUNCTION app_is_superadmin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() = 'superadmin' AND pg_has_role('agentapi_platform', 'MEMBER') $$;

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON organizations;

CREATE POLICY tenant_isolation ON organizations USING (id = app_org_id() OR app_is_superadmin()) WITH CHECK (app_is_superadmin());

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON memberships;

CREATE POLICY tenant_isolation ON memberships USING (org_id = app_org_id() OR app_is_superadmin()) WITH CHECK (org_id = app_org_id() OR app_is_superadmin());

ALTER TABLE user_sessions ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON user_sessions;

CREATE POLICY tenant_isolation ON user_sessions USING ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin()) WITH CHECK ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin());

ALTER TABLE session_messages ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON session_messages;

CREATE POLICY tenant_isolation ON session_messages USING ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin()) WITH CHECK ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin());

ALTER TABLE session_workspaces ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON session_workspaces;

CREATE POLICY tenant_isolation ON session_workspaces USING ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin()) WITH CHECK ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin());

ALTER TABLE mcp_configurations ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON mcp_configurations;

CREATE POLICY tenant_isolation ON mcp_configurations USING ((org_id = app_org_id() AND (user_id IS NULL OR (user_id = app_user_id() OR app_is_org_admin()))) OR app_is_superadmin()) WITH CHECK ((org_id = app_org_id() AND ((user_id IS NULL AND app_is_org_admin()) OR user_id = app_user_id())) OR app_is_superadmin());

ALTER TABLE mcp_oauth_tokens ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON mcp_oauth_tokens;

CREATE POLICY tenant_isolation ON mcp_oauth_tokens USING ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin()) WITH CHECK ((org_id = app_org_id() AND (user_id = app_user_id() OR app_is_org_admin())) OR app_is_superadmin());

ALTER TABLE system_prompts ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON system_prompts;

CREATE POLICY tenant_isolation ON system_prompts USING ((org_id IS NULL AND app_org_id() IS NOT NULL) OR (org_id = app_org_id() AND (user_id IS NULL OR (user_id = app_user_id() OR app_is_org_admin()))) OR app_is_superadmin()) WITH CHECK ((org_id = app_org_id() AND ((user_id IS NULL AND app_is_org_admin()) OR user_id = app_user_id())) OR app_is_superadmin());

ALTER TABLE tenant_settings ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON tenant_settings;

CREATE POLICY tenant_isolation ON tenant_settings USING (org_id = app_org_id() OR app_is_superadmin()) WITH CHECK (org_id = app_org_id() OR app_is_superadmin());

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON webhooks;

CREATE POLICY tenant_isolation ON webhooks USING (org_id = app_org_id() OR app_is_superadmin()) WITH CHECK (org_id = app_org_id() OR app_is_superadmin());

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON webhook_deliveries;

CREATE POLICY tenant_isolation ON webhook_deliveries USING (org_id = app_org_id() OR app_is_superadmin()) WITH CHECK (org_id = app_org_id() OR app_is_superadmin());

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON audit_logs;

CREATE POLICY tenant_isolation ON audit_logs USING (org_id = app_org_id() OR app_is_superadmin()) WITH CHECK (org_id = app_org_id() OR app_is_superadmin());

ALTER TABLE users ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON users;

CREATE POLICY tenant_isolation ON users USING (id = app_user_id() OR app_is_superadmin() OR EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id AND m.org_id = app_org_id())) WITH CHECK (id = app_user_id() OR app_is_superadmin());

ALTER TABLE organizations FORCE ROW LEVEL SECURITY;

ALTER TABLE memberships FORCE ROW LEVEL SECURITY;

ALTER TABLE user_sessions FORCE ROW LEVEL SECURITY;

ALTER TABLE session_messages FORCE ROW LEVEL SECURITY;

ALTER TABLE session_workspaces FORCE ROW LEVEL SECURITY;

ALTER TABLE mcp_configurations FORCE ROW LEVEL SECURITY;

ALTER TABLE mcp_oauth_tokens FORCE ROW LEVEL SECURITY;

ALTER TABLE system_prompts FORCE ROW LEVEL SECURITY;

ALTER TABLE tenant_settings FORCE ROW LEVEL SECURITY;

ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;

ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;

ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;

ALTER TABLE users FORCE ROW LEVEL SECURITY;

GRANT USAGE ON SCHEMA public TO agentapi_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, memberships, user_sessions, session_messages, session_workspaces, mcp_configurations, mcp_oauth_tokens, system_prompts, tenant_settings, webhooks, webhook_deliveries, users TO agentapi_app;

GRANT SELECT, INSERT ON audit_logs TO agentapi_app;

GRANT EXECUTE ON FUNCTION app_org_id(), app_user_id(), app_role(), app_is_superadmin(), app_is_org_admin() TO agentapi_app;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentapi_platform') THEN
    CREATE ROLE agentapi_platform LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  ELSE
    ALTER ROLE agentapi_platform LOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$$;

DO $$
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT %I TO %I', 'agentapi_platform', current_user);
  END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO agentapi_platform;

GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, memberships, user_sessions, session_messages, session_workspaces, mcp_configurations, mcp_oauth_tokens, system_prompts, tenant_settings, webhooks, webhook_deliveries, users TO agentapi_platform;

GRANT SELECT, INSERT ON audit_logs TO agentapi_platform;

GRANT EXECUTE ON FUNCTION app_org_id(), app_user_id(), app_role(), app_is_superadmin(), app_is_org_admin() TO agentapi_platform;

CREATE OR REPLACE FUNCTION app_is_superadmin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() = 'superadmin' AND pg_has_role('agentapi_platform', 'MEMBER') $$;
