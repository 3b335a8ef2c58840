"""The database schema: numbered migrations and the views every query reads.

Each migration is a list of statements taking the database from version n-1 to n, applied in one
transaction by :meth:`visionqc.store.database.Database.migrate`. Never edit a released migration: add a new
one. Views are derived and recreated after every migration run, so a change to :data:`VIEWS` needs a new
(possibly empty) migration.
"""

from __future__ import annotations

from visionqc.store import counts

DB_FILE = "visionqc.duckdb"
# A statement starting with this runs on PostgreSQL only (indexes for its planner: DuckDB scans with zone maps,
# and its ART indexes would only slow its writes).
POSTGRES_ONLY = "-- PostgreSQL only\n"
# The trigram index of file names (migration 13), made with pg_trgm wherever the database has it (another schema's
# store may have created it: an extension belongs to one schema per database), else created here. A block of its
# own: when the server cannot give it, the block's work is undone and the migration goes on without the index.
TRIGRAM_INDEX = """DO $$
DECLARE home text;
BEGIN
    SELECT n.nspname INTO home FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF home IS NULL THEN
        CREATE EXTENSION pg_trgm;
        home := current_schema();
    END IF;
    EXECUTE format('CREATE INDEX inspections_file_name ON inspections USING gin (lower(file_name) %I.gin_trgm_ops)',
        home);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'VisionQC: the file-name search has no trigram index (pg_trgm: %)', SQLERRM;
END $$"""

# released migration: add a new one. Views are derived and recreated after every migration run.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)",
            """CREATE TABLE batches (
                batch_id VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, station VARCHAR, operator VARCHAR,
                note VARCHAR, source VARCHAR NOT NULL, model_name VARCHAR, model_version VARCHAR,
                status VARCHAR NOT NULL)""",
            """CREATE TABLE images (
                sha256 VARCHAR PRIMARY KEY, width INTEGER, height INTEGER, format VARCHAR, byte_size BIGINT,
                path VARCHAR, thumb_path VARCHAR, first_seen TIMESTAMP NOT NULL)""",
            """CREATE TABLE inspections (
                inspection_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
                file_name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, model_name VARCHAR,
                model_version VARCHAR, no_defect_label VARCHAR, pred_defect VARCHAR, pred_defect_conf DOUBLE,
                pred_severity VARCHAR, pred_severity_conf DOUBLE, pred_location VARCHAR,
                pred_location_conf DOUBLE, pred_action VARCHAR, probabilities JSON, ood_score DOUBLE,
                needs_review BOOLEAN, review_reason VARCHAR, duplicate_of BIGINT, rev_defect VARCHAR,
                rev_severity VARCHAR, rev_location VARCHAR, rev_action VARCHAR, reviewed_at TIMESTAMP,
                reviewed_by VARCHAR, outlier_score DOUBLE, deleted_at TIMESTAMP)""",
            "CREATE TABLE embeddings (inspection_id BIGINT PRIMARY KEY, vector FLOAT[])",
            """CREATE TABLE reviews (
                review_id BIGINT PRIMARY KEY, inspection_id BIGINT NOT NULL, created_at TIMESTAMP NOT NULL,
                reviewer VARCHAR NOT NULL, kind VARCHAR NOT NULL, defect VARCHAR, severity VARCHAR,
                location VARCHAR, action VARCHAR, note VARCHAR, previous JSON)""",
            """CREATE TABLE tags (
                inspection_id BIGINT NOT NULL, tag VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (inspection_id, tag))""",
            """CREATE TABLE failures (
                failure_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, file_name VARCHAR NOT NULL,
                reason VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""",
            "CREATE SEQUENCE inspection_seq START 1",
            "CREATE SEQUENCE review_seq START 1",
            "CREATE SEQUENCE failure_seq START 1",
        ],
    ),
    (
        2,
        [
            # Duplicates (same SHA-256 as an earlier inspection) are reported, not classified again.
            # inspections.duplicate_of (v1) stays for old files but is no longer written.
            """CREATE TABLE duplicates (
                duplicate_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, file_name VARCHAR NOT NULL,
                sha256 VARCHAR NOT NULL, inspection_id BIGINT NOT NULL, created_at TIMESTAMP NOT NULL)""",
            "CREATE SEQUENCE duplicate_seq START 1",
            "ALTER TABLE batches ADD COLUMN finished_at TIMESTAMP",
            "UPDATE batches SET finished_at = created_at WHERE status = 'complete'",
        ],
    ),
    (
        3,
        [
            # Explore's near-duplicate search: the most similar earlier inspection and the cosine similarity,
            # so History can sort by it (the 'near-duplicate' tag alone made them searchable, not sortable).
            "ALTER TABLE inspections ADD COLUMN near_duplicate_of BIGINT",
            "ALTER TABLE inspections ADD COLUMN near_duplicate_similarity DOUBLE",
        ],
    ),
    (
        4,
        [
            # Exactly once per image: the one inspection that counts for each image content (SHA-256). Its
            # primary key is what stops two racing runs from both counting an image (visionqc.store.claims):
            # the loser of the race records a duplicate of the winner. A claim held by a soft-deleted
            # inspection may be taken over, so a deleted image can be inspected again.
            """CREATE TABLE image_claims (
                sha256 VARCHAR PRIMARY KEY, inspection_id BIGINT NOT NULL, claimed_at TIMESTAMP NOT NULL)""",
            # Existing files: each image is held by its earliest visible inspection, else its earliest one.
            """INSERT INTO image_claims
            SELECT sha256, coalesce(min(inspection_id) FILTER (WHERE deleted_at IS NULL), min(inspection_id)),
                min(created_at)
            FROM inspections GROUP BY sha256""",
        ],
    ),
    (
        5,
        [
            # "Not a part / unusable image" (not our part, blurred, empty, ...): a review outcome with its reason,
            # kept in step with the reviews like rev_*; such photos leave every quality figure.
            "ALTER TABLE inspections ADD COLUMN unusable_reason VARCHAR",
            "ALTER TABLE reviews ADD COLUMN unusable_reason VARCHAR",
            # What was inspected: optional part number and lot of a batch (the lot report names them).
            "ALTER TABLE batches ADD COLUMN part_number VARCHAR",
            "ALTER TABLE batches ADD COLUMN lot VARCHAR",
        ],
    ),
    (
        6,
        [
            # Datasets: named, versioned, immutable lists of labelled images (from reviews, an imported archive,
            # or several merged). Items point at the content-addressed image folder; nothing is ever updated.
            """CREATE TABLE datasets (
                dataset_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, version INTEGER NOT NULL,
                created_at TIMESTAMP NOT NULL, created_by VARCHAR, source VARCHAR NOT NULL, description VARCHAR,
                recipe JSON, no_defect_class VARCHAR NOT NULL, citation VARCHAR, images INTEGER NOT NULL,
                UNIQUE (name, version))""",
            """CREATE TABLE dataset_items (
                dataset_id VARCHAR NOT NULL, item INTEGER NOT NULL, sha256 VARCHAR NOT NULL, path VARCHAR NOT NULL,
                file_name VARCHAR NOT NULL, defect VARCHAR NOT NULL, severity VARCHAR, location VARCHAR,
                inspection_id BIGINT, origin VARCHAR, PRIMARY KEY (dataset_id, item))""",
            # Long work (training) run by a worker process, one at a time per data folder; live progress is in a
            # small file beside the job (visionqc.jobs), only the state changes are written here.
            """CREATE TABLE jobs (
                job_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
                created_by VARCHAR, status VARCHAR NOT NULL, params JSON NOT NULL, dataset_id VARCHAR,
                model_name VARCHAR, model_version VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
                pid INTEGER, error VARCHAR, result JSON)""",
        ],
    ),
    (
        7,
        [
            # Accounts for sign-in (visionqc.accounts): Argon2id hashes only. A disabled account keeps its row:
            # the audit trail names it.
            """CREATE TABLE users (
                username VARCHAR PRIMARY KEY, role VARCHAR NOT NULL, password_hash VARCHAR NOT NULL,
                disabled BOOLEAN NOT NULL DEFAULT false, created_at TIMESTAMP NOT NULL, created_by VARCHAR,
                password_changed_at TIMESTAMP NOT NULL)""",
            # Every sign-in attempt, kept: failures lock an account for a while (rate limit) and are the log.
            """CREATE TABLE sign_ins (
                attempted_at TIMESTAMP NOT NULL, username VARCHAR NOT NULL, ok BOOLEAN NOT NULL, reason VARCHAR)""",
        ],
    ),
    (
        8,
        [
            # An anomaly model's score (how unlike the good photos it learned from), so History can sort by it and
            # exports carry it; NULL for a classifier's inspections.
            "ALTER TABLE inspections ADD COLUMN anomaly_score DOUBLE",
        ],
    ),
    (
        9,
        [
            # The Dashboard's roll-up (visionqc.store.counts): visible inspections counted per UTC hour and per
            # the values the Dashboard groups and filters by, kept in step by every write; filled from the rows.
            counts.CREATE_TABLE,
            POSTGRES_ONLY + f"CREATE INDEX inspection_counts_hour ON {counts.TABLE} (hour)",
            counts.BACKFILL,
        ],
    ),
    (
        10,
        [
            # History's default order (newest first) from an index on PostgreSQL: a page without a full scan.
            POSTGRES_ONLY + "CREATE INDEX inspections_newest ON inspections (created_at DESC NULLS LAST, "
            "inspection_id DESC)",
        ],
    ),
    (
        11,
        [
            # Second opinions: a re-inspection classifies images already inspected again, into a batch of its own.
            # History shows them; the Dashboard, the roll-up and the review queue count each image once, by the
            # inspection holding its image (visionqc.store.claims), so they leave second opinions out.
            "ALTER TABLE inspections ADD COLUMN second_opinion BOOLEAN DEFAULT false",
            "UPDATE inspections SET second_opinion = false WHERE second_opinion IS NULL",
            # Those written before: in a re-inspection's batch, beside the inspection that holds their image.
            """UPDATE inspections SET second_opinion = true
            WHERE batch_id IN (SELECT batch_id FROM batches WHERE note LIKE 're-inspection of % with %')
              AND inspection_id NOT IN (SELECT inspection_id FROM image_claims)""",
            f"DELETE FROM {counts.TABLE}",
            counts.BACKFILL_FIRST_OPINIONS,
            # History's totals come from the roll-up plus the second opinions the filter matches: a few rows.
            POSTGRES_ONLY + "CREATE INDEX inspections_second_opinions ON inspections (created_at) WHERE second_opinion",
        ],
    ),
    (
        12,
        [
            # History's most common narrowing filter on PostgreSQL, effective defect type (+ days), read from an
            # index alone: keyed by the view's own expression for the effective defect, then time, carrying what
            # the page reads and sorts by (with the visibility map that autovacuum keeps, an index-only scan of a
            # few narrow entries per match instead of a scan of every wide row). Visible rows only.
            POSTGRES_ONLY + "CREATE INDEX inspections_defect_time ON inspections "
            "((CASE WHEN reviewed_at IS NULL THEN pred_defect ELSE rev_defect END), created_at) "
            "INCLUDE (pred_defect_conf, inspection_id, reviewed_at, pred_defect, rev_defect) WHERE deleted_at IS NULL",
            # The Dashboard's count of photos marked unusable, from the few roll-up rows that hold them (without it,
            # a scan of the whole roll-up for a figure that is usually 0).
            POSTGRES_ONLY
            + f"CREATE INDEX inspection_counts_unusable ON {counts.TABLE} (hour) WHERE unusable AND n > 0",
        ],
    ),
    (
        13,
        [
            # Account names are unique whatever their case, in the database itself: two admins adding "Lea" and "lea"
            # at once on PostgreSQL both passed the check before either committed. (The app has always refused such
            # a pair; only that race could have stored one, which would stop this migration with the names.)
            "CREATE UNIQUE INDEX users_folded_name ON users (lower(username))",
            # History's tag filters on PostgreSQL: the inspections carrying a tag, from the tags alone (a rare tag
            # no longer walks a million rows), and the few soft-deleted ones, so a tag filter's total is counted
            # from the tags without reading every inspection (visionqc.store.inspections._tag_total).
            POSTGRES_ONLY + "CREATE INDEX tags_by_tag ON tags (tag, inspection_id)",
            POSTGRES_ONLY
            + "CREATE INDEX inspections_deleted ON inspections (inspection_id) WHERE deleted_at IS NOT NULL",
            # History's file-name search on PostgreSQL: a trigram index serves ``lower(file_name) LIKE '%text%'``.
            # pg_trgm ships with PostgreSQL (contrib) and is a trusted extension, but a server may lack it or refuse
            # to create it: then the search works without the index (a scan), and the server's log says why.
            POSTGRES_ONLY + TRIGRAM_INDEX,
        ],
    ),
    (
        14,
        [
            # Which machine runs a job, and when its worker last said it is alive (the database's clock): on a plant's
            # shared store, a worker on another station is not seen through this machine's worker lock.
            "ALTER TABLE jobs ADD COLUMN host VARCHAR",
            "ALTER TABLE jobs ADD COLUMN heartbeat_at TIMESTAMP",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Effective labels: the latest review when there is one (even if it cleared severity), else the prediction.
VIEWS = [
    """CREATE OR REPLACE VIEW inspection_view_all AS
    SELECT i.*,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_defect ELSE i.rev_defect END AS defect,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_severity ELSE i.rev_severity END AS severity,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_location ELSE i.rev_location END AS location,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_action ELSE i.rev_action END AS action,
        i.pred_defect_conf AS confidence,
        i.reviewed_at IS NOT NULL AS reviewed,
        (CASE WHEN i.reviewed_at IS NULL THEN i.pred_defect ELSE i.rev_defect END) <> i.no_defect_label
            AS is_defect,
        i.deleted_at IS NOT NULL AS deleted,
        i.unusable_reason IS NOT NULL AS unusable
    FROM inspections i""",
    "CREATE OR REPLACE VIEW inspection_view AS SELECT * FROM inspection_view_all WHERE deleted_at IS NULL",
    # What the Dashboard counts: each visible image once (no second opinion of a re-inspection).
    "CREATE OR REPLACE VIEW counted_inspections AS SELECT * FROM inspection_view WHERE NOT second_opinion",
]
# Dropped before the views are made again (dependents first): PostgreSQL cannot replace a view whose columns moved,
# as a column added to ``inspections`` moves those after ``i.*``.
DROP_VIEWS = [
    "DROP VIEW IF EXISTS counted_inspections",
    "DROP VIEW IF EXISTS inspection_view",
    "DROP VIEW IF EXISTS inspection_view_all",
]
