-- The refresh grace window's successor, sealed under a key derived from its parent token
-- (archomata.identity.sessions): whoever presents the parent again inside the window opens
-- it and gets the same successor, on any instance, whatever data key each is configured
-- with. Neither Redis nor PostgreSQL can open it without the parent token. Null for a
-- family not rotated since (its parent, if any, was rotated before this column).
alter table sessions add column successor_sealed text;
