//go:build durable

// The durable store of `collector -db PATH` (built with -tags "durable libsqlite3"): every job is
// committed to SQLite before its 202, the way hitd's SQLite store does it, so that intake.sh can
// set hitd beside a Go server that keeps the same promise (the `go-durable` server there).
//
// What is the same as hitd's store: the system's libsqlite3 (the one Python's sqlite3 links), WAL
// with synchronous=FULL (the WAL is fsynced at each commit), hitd's jobs table and its partial
// indexes, one writer that takes every request waiting when it starts a transaction (group
// commit: one fsync for all of them), a batch inserted with one INSERT ... SELECT from
// json_each, and each finished job written back as succeeded in a later group. A job goes to
// a worker straight from memory after its commit, which is hitd's handoff path (a batch is
// inserted already claimed when workers have room), so there is no separate claim write.
// What it leaves out: leases, retries, idempotency keys and delayed jobs' run_at (a delayed
// job is stored with its due time but waits in memory), so it is a lower bound on the
// durable cost and an upper bound on what a Go server of this shape accepts per second.
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers "sqlite3"; libsqlite3 tag: the system library
)

// hitd's schema (src/hitpool/hitd/store/sqlite_ops.py), so each row and index costs the same.
const schema = `
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    run_at REAL NOT NULL,
    key TEXT,
    lease_until REAL,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (key)
    WHERE key IS NOT NULL AND status IN ('queued', 'running');
`

// A batch is inserted running (handed straight to the pool), as hitd's handoff inserts it.
const insertSQL = `INSERT INTO jobs (id, task, args, status, attempts, max_attempts, created_at,
    started_at, run_at, lease_until, worker)
    SELECT ?1 + key, value ->> 0, value -> 1, 'running', 1, value ->> 2, ?2, ?2,
    coalesce(value ->> 3, ?2), ?2 + 300, 'go' FROM json_each(?3)`

const finishSQL = `UPDATE jobs SET status = 'succeeded', result = 'null', finished_at = ?1,
    lease_until = NULL WHERE id IN (SELECT value FROM json_each(?2))`

// maxGroup bounds one transaction's jobs, so a burst cannot make one commit arbitrarily long.
const maxGroup = 10000

type commitReq struct {
	jobs []WorkRequest
	due  []time.Duration
	done chan commitResult
}

type commitResult struct {
	first int64 // the first job's id; the batch has ids first .. first+len-1
	err   error
}

type sqliteStore struct {
	db       *sql.DB
	requests chan commitReq
	finished chan int64
	nextID   int64 // owned by the writer goroutine

	commits atomic.Int64 // transactions committed
	rows    atomic.Int64 // jobs inserted in them (rows / commits: the mean group)
	largest atomic.Int64 // most jobs one transaction inserted
}

func init() { openStore = openSQLite }

func openSQLite(path string) (jobStore, error) {
	// One connection: the writer is the only user, as hitd's single writer thread is.
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	var mode string
	var sync int
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, err
	}
	if err := db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
		return nil, err
	}
	if mode != "wal" || sync != 2 {
		return nil, fmt.Errorf("%s: journal_mode=%s synchronous=%d, want wal and 2 (FULL)", path, mode, sync)
	}
	if _, err := db.Exec(schema); err != nil {
		return nil, err
	}
	s := &sqliteStore{db: db, requests: make(chan commitReq, 4096), finished: make(chan int64, 65536)}
	if err := db.QueryRow("SELECT coalesce(max(id), 0) + 1 FROM jobs").Scan(&s.nextID); err != nil {
		return nil, err
	}
	go s.writer()
	return s, nil
}

func (s *sqliteStore) Describe() string { return "sqlite WAL synchronous=FULL, group commit" }

// Stats is what /stats shows under "commits": how the groups came out.
func (s *sqliteStore) Stats() map[string]int64 {
	return map[string]int64{"commits": s.commits.Load(), "jobs": s.rows.Load(), "largest": s.largest.Load()}
}

// Commit blocks until the jobs are in a committed transaction (fsynced) and returns their ids.
func (s *sqliteStore) Commit(jobs []WorkRequest, due []time.Duration) (int64, error) {
	done := make(chan commitResult, 1)
	s.requests <- commitReq{jobs: jobs, due: due, done: done}
	r := <-done
	return r.first, r.err
}

// Finished records a job's success; the writer stores it in its next group. It blocks only
// when 65536 finishes are waiting, which bounds memory as hitd's finisher queue does.
func (s *sqliteStore) Finished(id int64) { s.finished <- id }

type jobRow struct {
	task        string
	args        json.RawMessage
	maxAttempts int
	runAt       *float64
}

func (r jobRow) MarshalJSON() ([]byte, error) {
	args := r.args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	return json.Marshal([]any{r.task, args, r.maxAttempts, r.runAt})
}

// writer is the only goroutine that touches the database: it takes one request, then every
// request and finish already waiting (up to maxGroup jobs), and commits them in one transaction.
func (s *sqliteStore) writer() {
	for {
		var reqs []commitReq
		var done []int64
		select {
		case r := <-s.requests:
			reqs = append(reqs, r)
		case id := <-s.finished:
			done = append(done, id)
		}
		// Let every runnable handler submit first, as hitd's flusher runs on the next loop
		// turn: with GOMAXPROCS=1 the writer would otherwise start a commit for the one
		// request that woke it while the others wait, unparsed, for a whole fsync more.
		runtime.Gosched()
		n := len(done)
		for _, r := range reqs {
			n += len(r.jobs)
		}
	gather:
		for n < maxGroup {
			select {
			case r := <-s.requests:
				reqs = append(reqs, r)
				n += len(r.jobs)
			case id := <-s.finished:
				done = append(done, id)
				n++
			default:
				break gather
			}
		}
		firsts, err := s.commitGroup(reqs, done)
		for i, r := range reqs {
			r.done <- commitResult{first: firsts[i], err: err}
		}
	}
}

func (s *sqliteStore) commitGroup(reqs []commitReq, done []int64) ([]int64, error) {
	now := float64(time.Now().UnixNano()) / 1e9
	firsts := make([]int64, len(reqs))
	var rows []jobRow
	first := s.nextID
	for i, r := range reqs {
		firsts[i] = first + int64(len(rows))
		for k, j := range r.jobs {
			row := jobRow{task: j.Task, args: j.Args, maxAttempts: j.MaxAttempts}
			if r.due != nil && r.due[k] > 0 {
				at := now + r.due[k].Seconds()
				row.runAt = &at
			}
			rows = append(rows, row)
		}
	}
	tx, err := s.db.Begin()
	if err != nil {
		return firsts, err
	}
	if len(rows) > 0 {
		blob, err := json.Marshal(rows)
		if err == nil {
			_, err = tx.Exec(insertSQL, first, now, string(blob))
		}
		if err != nil {
			_ = tx.Rollback()
			return firsts, err
		}
	}
	if len(done) > 0 {
		blob, _ := json.Marshal(done)
		if _, err := tx.Exec(finishSQL, now, string(blob)); err != nil {
			_ = tx.Rollback()
			return firsts, err
		}
	}
	if err := tx.Commit(); err != nil {
		return firsts, err
	}
	s.nextID = first + int64(len(rows))
	s.commits.Add(1)
	s.rows.Add(int64(len(rows)))
	if int64(len(rows)) > s.largest.Load() {
		s.largest.Store(int64(len(rows)))
	}
	return firsts, nil
}
