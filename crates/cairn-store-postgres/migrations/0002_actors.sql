-- Who made a change: every token has a subject, the recorded actor of whatever is done
-- with it (tokens made before subjects existed get `token:<id>`); history and queued
-- events keep the token's id and whom the caller said it acted for, beside the actor.
ALTER TABLE tokens ADD COLUMN subject text NOT NULL DEFAULT '';
UPDATE tokens SET subject = 'token:' || id;
ALTER TABLE history ADD COLUMN token_id text;
ALTER TABLE history ADD COLUMN on_behalf_of text;
ALTER TABLE inbox ADD COLUMN token_id text;
ALTER TABLE inbox ADD COLUMN on_behalf_of text;
