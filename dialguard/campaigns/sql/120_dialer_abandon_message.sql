-- The dialer's abandon message per campaign (issue #18 item 3): an Asterisk media
-- URI (sound:/path/without/extension or sound:name) the admin supplies, played to
-- a callee answered with no agent free, and by the dialplan when no dialer runs.
-- NULL: the dialer's default message.
ALTER TABLE dialer_campaigns ADD COLUMN IF NOT EXISTS abandon_media text;
