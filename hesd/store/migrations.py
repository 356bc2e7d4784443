"""Versioned schema of the hesd store; ``PRAGMA user_version`` records the applied version.

Migrations only ever append: a released step is never edited. A database written by a newer hesd
(a higher version than the last step here) is refused rather than guessed at.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

# (version, what it does, SQL). Times are UNIX seconds (UTC) as REAL; payloads are msgpack BLOBs.
MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (
        1,
        "meter registry, outbox, commands with audit trail, DLMS invocation counters",
        """
        CREATE TABLE meters (
            meter_id       TEXT PRIMARY KEY,
            vendor         TEXT NOT NULL,
            transport      TEXT NOT NULL
                           CHECK (transport IN ('tcp-in', 'tcp-out', 'serial', 'mqtt')),
            address        TEXT NOT NULL DEFAULT '',
            serial_number  TEXT NOT NULL DEFAULT '',
            system_title   TEXT NOT NULL DEFAULT '',   -- 16 hex digits, or empty
            keyset         TEXT NOT NULL DEFAULT '',   -- name in the secrets file, or empty
            tags           TEXT NOT NULL DEFAULT '',   -- "key=value;key=value"
            firmware       TEXT,
            status         TEXT NOT NULL DEFAULT 'unknown'
                           CHECK (status IN ('unknown', 'online', 'offline')),
            last_seen      REAL,
            signal_quality INTEGER,                    -- RSSI in dBm as the link reports it
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX meters_by_status ON meters (status, meter_id);
        CREATE INDEX meters_by_vendor ON meters (vendor, meter_id);
        CREATE INDEX meters_by_serial ON meters (serial_number) WHERE serial_number != '';
        CREATE UNIQUE INDEX meters_by_system_title ON meters (system_title)
            WHERE system_title != '';

        CREATE TABLE outbox (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            kind        TEXT NOT NULL CHECK (kind IN ('reading', 'event', 'command_result')),
            meter_id    TEXT NOT NULL,
            created_at  REAL NOT NULL,
            payload     BLOB NOT NULL,
            state       TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'inflight', 'dead')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            batch_key   TEXT,
            last_error  TEXT
        );
        CREATE INDEX outbox_by_state ON outbox (state, seq);
        CREATE INDEX outbox_by_meter ON outbox (meter_id, seq);

        CREATE TABLE commands (
            command_id    TEXT PRIMARY KEY,
            meter_id      TEXT NOT NULL,
            kind          TEXT NOT NULL,
            params        BLOB NOT NULL,
            state         TEXT NOT NULL
                          CHECK (state IN ('queued', 'sent', 'succeeded', 'failed',
                                           'expired', 'cancelled')),
            requested_by  TEXT NOT NULL,
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            expires_at    REAL NOT NULL,
            attempts      INTEGER NOT NULL DEFAULT 0,
            result        BLOB
        ) WITHOUT ROWID;
        CREATE INDEX commands_by_meter ON commands (meter_id, state, created_at);
        CREATE INDEX commands_by_state ON commands (state, expires_at);

        CREATE TABLE command_audit (
            command_id  TEXT NOT NULL REFERENCES commands (command_id) ON DELETE CASCADE,
            at          REAL NOT NULL,
            state       TEXT NOT NULL,
            detail      TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX command_audit_by_command ON command_audit (command_id, at);

        -- Suite-0 invocation counters (IEC 62056-5-3 §5.3.4.7). 'tx' is the next counter hesd may
        -- use towards the meter, reserved ahead in blocks so that a crash never reuses one; 'rx' is
        -- the highest counter accepted from the meter, so a replay is refused after a restart.
        CREATE TABLE invocation_counters (
            meter_id        TEXT NOT NULL,
            client_address  INTEGER NOT NULL,
            direction       TEXT NOT NULL CHECK (direction IN ('tx', 'rx')),
            -- 'tx' stores the first counter not yet reserved: 2^32 once the space is used up
            value           INTEGER NOT NULL CHECK (value BETWEEN 0 AND 4294967296),
            updated_at      REAL NOT NULL,
            PRIMARY KEY (meter_id, client_address, direction)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "commands.progress: how far a long command has got (firmware upgrades)",
        """
        -- msgpack of a map, e.g. {"phase": "transfer", "blocks_done": 12, "blocks_total": 40}
        ALTER TABLE commands ADD COLUMN progress BLOB;
        """,
    ),
    (
        3,
        "audit of API calls (hesd/api/audit.py)",
        """
        -- One row per API call, on the unix socket or on TCP. No keys, no bodies, no query
        -- strings. Pruned by age (api.audit_retention_days) and count (api.audit_max_rows).
        CREATE TABLE api_audit (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            at           REAL NOT NULL,
            listener     TEXT NOT NULL CHECK (listener IN ('socket', 'tcp')),
            client       TEXT NOT NULL,      -- API client name, 'socket' or 'anonymous'
            peer         TEXT NOT NULL,      -- IP address on TCP, 'uid:N' on the socket
            method       TEXT NOT NULL,
            path         TEXT NOT NULL,
            status       INTEGER NOT NULL,
            duration_ms  REAL NOT NULL,
            command_id   TEXT                -- the command the call created, if any
        );
        CREATE INDEX api_audit_by_time ON api_audit (at);
        CREATE INDEX api_audit_by_client ON api_audit (client, id);
        """,
    ),
    (
        4,
        "scheduler: run records, the newest profile row and event hesd has per meter, holes",
        """
        -- One row per run of a schedule (hesd/scheduler.py); the newest keep_runs per schedule.
        CREATE TABLE schedule_runs (
            schedule     TEXT NOT NULL,
            started_at   REAL NOT NULL,
            trigger      TEXT NOT NULL CHECK (trigger IN ('cron', 'manual')),
            state        TEXT NOT NULL
                         CHECK (state IN ('running', 'finished', 'cancelled', 'interrupted')),
            finished_at  REAL,
            selected     INTEGER NOT NULL DEFAULT 0,
            succeeded    INTEGER NOT NULL DEFAULT 0,
            failed       INTEGER NOT NULL DEFAULT 0,
            skipped      INTEGER NOT NULL DEFAULT 0,   -- offline at their slot
            missed       INTEGER NOT NULL DEFAULT 0,   -- not started within the window
            readings     INTEGER NOT NULL DEFAULT 0,
            events       INTEGER NOT NULL DEFAULT 0,
            errors       INTEGER NOT NULL DEFAULT 0,   -- values the meters refused or garbled
            holes        INTEGER NOT NULL DEFAULT 0,   -- profile intervals found missing
            max_in_flight       INTEGER NOT NULL DEFAULT 0,  -- the run's requests at once
            max_link_in_flight  INTEGER NOT NULL DEFAULT 0,  -- ... on one link
            link_overruns       INTEGER NOT NULL DEFAULT 0,  -- more on a link than it allows
            detail       TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (schedule, started_at)
        ) WITHOUT ROWID;

        -- The newest row hesd has of a meter's profile ('profile:block_load') or event log
        -- ('events:power'), as UNIX seconds: the next scheduled read starts after it.
        CREATE TABLE read_marks (
            what        TEXT NOT NULL,
            meter_id    TEXT NOT NULL,
            last_at     REAL NOT NULL,
            updated_at  REAL NOT NULL,
            PRIMARY KEY (what, meter_id)
        ) WITHOUT ROWID;

        -- Intervals missing inside a profile read (interval ends, UNIX seconds, inclusive),
        -- read again by the next runs of a schedule that reads the profile.
        CREATE TABLE profile_holes (
            profile     TEXT NOT NULL,
            meter_id    TEXT NOT NULL,
            start_at    REAL NOT NULL,
            end_at      REAL NOT NULL,
            attempts    INTEGER NOT NULL,
            found_at    REAL NOT NULL,
            PRIMARY KEY (profile, meter_id, start_at)
        ) WITHOUT ROWID;
        """,
    ),
    (
        5,
        "outbox rows hold the records one producer handed over together (a push's readings)",
        """
        -- a row's records have the seqs seq - records + 1 .. seq (hesd/uplink/outbox.py)
        ALTER TABLE outbox ADD COLUMN records INTEGER NOT NULL DEFAULT 1
            CHECK (records BETWEEN 1 AND 10000);
        """,
    ),
    (
        6,
        "the outbox's depth, dead letters and oldest record from an index, not its payloads",
        """
        -- A row's payload (a push's records, ~5 kB) sits before state and records, in overflow
        -- pages: summing records read every payload of the backlog, and each status call did
        -- (hesctl status, the API, the metrics), on the reader the forwarder reads rows with.
        -- With these columns in the index the sums read the index alone; the forwarder's
        -- (state, seq) lookups use its first columns as before.
        DROP INDEX outbox_by_state;
        CREATE INDEX outbox_by_state ON outbox (state, seq, records, created_at);
        -- no query ever looked rows up by meter; every insert and delete kept it up to date
        DROP INDEX outbox_by_meter;
        """,
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
