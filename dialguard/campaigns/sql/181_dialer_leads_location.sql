-- Lead fields for where the callee lives and who they are (issue 19, SPEC
-- section 2), passed to every decision on the lead: region (ISO 3166-2, e.g.
-- US-FL), postal_code (a US ZIP code) and the party (the person or account
-- behind the number, several numbers may share it), sealed like the number
-- (party_enc, opened by the dialer to ask the guard; the guard keys its
-- counters by a keyed hash of it). NULL: not given.
ALTER TABLE dialer_leads
    ADD COLUMN region text,
    ADD COLUMN postal_code text,
    ADD COLUMN party_enc text;
