// Command collector is the Go reference for benchmarks/intake.sh: the in-memory design of
// "Handling 1 Million Requests per Minute with Go" (seeds 002 and 004) behind Go's net/http.
//
// A collector (the HTTP handlers) puts work requests on a bounded WorkQueue channel; a dispatcher
// takes each one and hands it to the next idle worker, found on WorkerQueue, a channel of the
// workers' own channels; a fixed pool of workers with numeric IDs runs them. Nothing is stored:
// a job lives only in memory, so a 202 here promises nothing across a crash. That is the point of
// the comparison: hitd answers 202 only after a SQLite FULL commit.
//
// Endpoints, shaped like hitd's so one load generator drives both:
//
//	POST /work     form or JSON {name, delay}  -> 201 {"id":N}, the seed's collector (task hello)
//	POST /jobs     {"task","args","delay","max_attempts","key"} or an array of 1..1000
//	               -> 202 {"id":N} or {"ids":[...]}, Location: /jobs/{first id}
//	GET  /stats    {"accepted","rejected","completed","queue","workers"} as JSON
//	GET  /healthz  {"status":"ok"}
//
// Two deliberate departures from the seed, both to match hitd's contract: the handler never
// blocks on a full queue (it answers 429 with Retry-After, where the seed's `WorkQueue <- work`
// would hang the request), and the dispatcher waits for an idle worker itself instead of starting
// a goroutine per job, so the queue really bounds memory. Standard library only (Go 1.19).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	maxBatch     = 1000
	maxAttempts  = 100
	maxKeyLen    = 200
	workMaxDelay = 10 * time.Second // the seed's collector allowed at most 10 s of hello
	maxJobDelay  = 366 * 24 * time.Hour
)

// WorkRequest is one unit of work, the seed's {Name, Delay} plus the /jobs fields.
type WorkRequest struct {
	ID    int64
	Task  string
	Name  string
	Delay time.Duration
	Args  json.RawMessage // kept verbatim, as a real server would store it

	MaxAttempts int // stored by the durable variant; this collector never retries
}

// jobStore is where `-db PATH` keeps jobs (store_sqlite.go, built with -tags "durable
// libsqlite3"). Without -db nothing is stored and a 202 is a promise only while the process lives.
type jobStore interface {
	Describe() string
	// Commit returns once the jobs are durably committed, with the first one's id.
	Commit(jobs []WorkRequest, due []time.Duration) (int64, error)
	// Finished records that a job succeeded (stored in a later commit, not waited for).
	Finished(id int64)
	// Stats are the store's own counters for GET /stats.
	Stats() map[string]int64
}

// openStore is set by store_sqlite.go when built with the durable tag, nil otherwise.
var openStore func(path string) (jobStore, error)

// Worker is the seed's worker: it offers its own channel on WorkerQueue, then waits for work.
type Worker struct {
	ID          int
	Work        chan WorkRequest
	WorkerQueue chan chan WorkRequest
	QuitChan    chan bool
}

// NewWorker makes worker `id` that registers itself on workerQueue.
func NewWorker(id int, workerQueue chan chan WorkRequest) Worker {
	return Worker{
		ID:          id,
		Work:        make(chan WorkRequest),
		WorkerQueue: workerQueue,
		QuitChan:    make(chan bool),
	}
}

// Start runs the worker's for-select loop in a goroutine.
func (w Worker) Start(c *Collector) {
	go func() {
		for {
			w.WorkerQueue <- w.Work // ready for the next request
			select {
			case work := <-w.Work:
				c.busy.Add(1)
				c.run(w.ID, work)
				if c.store != nil {
					c.store.Finished(work.ID)
				}
				c.busy.Add(-1)
				c.completed.Add(1)
			case <-w.QuitChan:
				return
			}
		}
	}()
}

// Stop asks the worker to stop after the work it is doing.
func (w Worker) Stop() {
	go func() { w.QuitChan <- true }()
}

// Collector holds the queue, the pool and the counters /stats reports.
type Collector struct {
	WorkQueue   chan WorkRequest
	WorkerQueue chan chan WorkRequest
	workers     []Worker
	queueSize   int64
	maxBody     int64
	verbose     bool
	logger      *log.Logger
	store       jobStore // nil: in memory only

	nextID    atomic.Int64
	pending   atomic.Int64 // accepted and not yet handed to a worker: the queue's real depth
	accepted  atomic.Int64
	rejected  atomic.Int64 // 429s
	completed atomic.Int64
	busy      atomic.Int64
}

// NewCollector builds the queue and starts the dispatcher and `nworkers` workers.
func NewCollector(nworkers int, queueSize int, maxBody int64, verbose bool) *Collector {
	c := &Collector{
		WorkQueue:   make(chan WorkRequest, queueSize),
		WorkerQueue: make(chan chan WorkRequest, nworkers),
		queueSize:   int64(queueSize),
		maxBody:     maxBody,
		verbose:     verbose,
		logger:      log.New(os.Stdout, "", log.LstdFlags),
	}
	for i := 0; i < nworkers; i++ {
		w := NewWorker(i+1, c.WorkerQueue)
		c.workers = append(c.workers, w)
		w.Start(c)
	}
	go c.dispatch()
	return c
}

func (c *Collector) dispatch() {
	for work := range c.WorkQueue {
		worker := <-c.WorkerQueue // wait here for an idle worker: no goroutine per job
		c.pending.Add(-1)
		worker <- work
	}
}

// run is the built-in hello task of seed 004: wait the delay, greet, say which worker did it.
func (c *Collector) run(workerID int, work WorkRequest) {
	name := work.Name
	if work.Task == "hello" && name == "" && len(work.Args) > 0 {
		var args struct {
			Name  string          `json:"name"`
			Delay json.RawMessage `json:"delay"`
		}
		if json.Unmarshal(work.Args, &args) == nil {
			name = args.Name
			if d, err := parseDelay(args.Delay, workMaxDelay); err == nil {
				work.Delay = d
			}
		}
	}
	if name == "" {
		name = "world"
	}
	if work.Delay > 0 {
		time.Sleep(work.Delay)
	}
	if c.verbose {
		c.logger.Printf("worker%d: Hello, %s!", workerID, name)
	}
}

// reserve takes room for n jobs in the queue, or reports that it is full. Reserving before
// sending means a send on WorkQueue (capacity queueSize) never blocks a handler.
func (c *Collector) reserve(n int64) bool {
	if c.pending.Add(n) > c.queueSize {
		c.pending.Add(-n)
		c.rejected.Add(1)
		return false
	}
	return true
}

// enqueue gives ids to reserved jobs and queues them; a delayed job joins the queue when due.
// With a store, the jobs are committed first (ids are the store's) and queued only after it:
// a 202 is then sent only for committed jobs. A failed commit gives back the reservation.
func (c *Collector) enqueue(jobs []WorkRequest, due []time.Duration) ([]int64, error) {
	var first int64
	if c.store != nil {
		var err error
		if first, err = c.store.Commit(jobs, due); err != nil {
			c.pending.Add(-int64(len(jobs)))
			return nil, err
		}
	} else {
		first = c.nextID.Add(int64(len(jobs))) - int64(len(jobs)) + 1
	}
	ids := make([]int64, len(jobs))
	for i := range jobs {
		jobs[i].ID = first + int64(i)
		ids[i] = jobs[i].ID
		if due != nil && due[i] > 0 {
			job := jobs[i]
			time.AfterFunc(due[i], func() { c.WorkQueue <- job })
			continue
		}
		c.WorkQueue <- jobs[i]
	}
	c.accepted.Add(int64(len(jobs)))
	return ids, nil
}

func storeError(err error) *apiError {
	return &apiError{http.StatusServiceUnavailable, "store", fmt.Sprintf("could not commit: %v", err)}
}

// ----------------------------------------------------------------------------------------------
// HTTP

type apiError struct {
	status  int
	field   string
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(field, format string, a ...any) *apiError {
	return &apiError{http.StatusBadRequest, field, fmt.Sprintf(format, a...)}
}

// writeJSON answers with a compact JSON body, like hitd.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError uses hitd's error shape: {"error": reason_phrase, "field": ..., "message": ...}.
func writeError(w http.ResponseWriter, e *apiError) {
	reason := strings.ReplaceAll(strings.ToLower(http.StatusText(e.status)), " ", "_")
	reason = strings.ReplaceAll(reason, "-", "_")
	var field any
	if e.field != "" {
		field = e.field
	}
	body, _ := json.Marshal(map[string]any{"error": reason, "field": field, "message": e.message})
	if e.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, body)
}

func (c *Collector) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &apiError{http.StatusRequestEntityTooLarge, "body",
			fmt.Sprintf("larger than %d bytes", c.maxBody)}
	}
	if err != nil {
		return nil, badRequest("body", "could not read the body: %v", err)
	}
	return body, nil
}

func allowOnly(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, &apiError{http.StatusMethodNotAllowed, "method",
		fmt.Sprintf("%s is not allowed here; use %s", r.Method, method)})
	return false
}

// parseDelay reads a number of seconds or a Go duration string ("5s", "250ms"); absent is 0.
func parseDelay(raw json.RawMessage, max time.Duration) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, nil
	}
	var d time.Duration
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		if secs, err := strconv.ParseFloat(s, 64); err == nil {
			d = time.Duration(secs * float64(time.Second))
		} else if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration: use e.g. \"5s\" or 2.5", s)
		}
	} else {
		secs, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return 0, errors.New(`must be a duration like "5s" or a number of seconds`)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 || d > max {
		return 0, fmt.Errorf("must be from 0 to %v", max)
	}
	return d, nil
}

type jobSpec struct {
	Task        string          `json:"task"`
	Args        json.RawMessage `json:"args"`
	Delay       json.RawMessage `json:"delay"`
	MaxAttempts *int            `json:"max_attempts"`
	Key         *string         `json:"key"`
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func checkJob(j *jobSpec, prefix string) (WorkRequest, time.Duration, *apiError) {
	if j.Task == "" {
		return WorkRequest{}, 0, badRequest(prefix+"task", "required: the name of a registered task")
	}
	if j.Task != "hello" {
		return WorkRequest{}, 0, &apiError{http.StatusUnprocessableEntity, prefix + "task",
			fmt.Sprintf("unknown task %q; this collector knows hello", j.Task)}
	}
	args := bytes.TrimSpace(j.Args)
	if len(args) > 0 && args[0] != '{' && !bytes.Equal(args, []byte("null")) {
		return WorkRequest{}, 0, badRequest(prefix+"args", "must be a JSON object of keyword arguments")
	}
	due, err := parseDelay(j.Delay, maxJobDelay)
	if err != nil {
		return WorkRequest{}, 0, badRequest(prefix+"delay", "%v", err)
	}
	if j.MaxAttempts != nil && (*j.MaxAttempts < 1 || *j.MaxAttempts > maxAttempts) {
		return WorkRequest{}, 0, badRequest(prefix+"max_attempts", "must be an integer from 1 to %d", maxAttempts)
	}
	if j.Key != nil && (len(*j.Key) == 0 || len(*j.Key) > maxKeyLen) {
		return WorkRequest{}, 0, badRequest(prefix+"key", "must be a string of 1 to %d characters", maxKeyLen)
	}
	attempts := 3
	if j.MaxAttempts != nil {
		attempts = *j.MaxAttempts
	}
	return WorkRequest{Task: j.Task, Args: args, MaxAttempts: attempts}, due, nil
}

// Jobs is POST /jobs: one job object or an array of up to 1000 -> 202 with the ids.
func (c *Collector) Jobs(w http.ResponseWriter, r *http.Request) {
	if !allowOnly(w, r, http.MethodPost) {
		return
	}
	body, aerr := c.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	trimmed := bytes.TrimSpace(body)
	var specs []jobSpec
	single := len(trimmed) > 0 && trimmed[0] == '{'
	if single {
		specs = make([]jobSpec, 1)
		if err := decodeStrict(trimmed, &specs[0]); err != nil {
			writeError(w, badRequest("body", "malformed job: %v", err))
			return
		}
	} else if err := decodeStrict(trimmed, &specs); err != nil {
		writeError(w, badRequest("body", "malformed JSON: send a job object or an array of them (%v)", err))
		return
	}
	if len(specs) == 0 || len(specs) > maxBatch {
		writeError(w, badRequest("body", "%d jobs: send 1 to %d per request", len(specs), maxBatch))
		return
	}
	jobs := make([]WorkRequest, len(specs))
	var due []time.Duration
	for i := range specs {
		prefix := ""
		if !single {
			prefix = "[" + strconv.Itoa(i) + "]."
		}
		job, d, aerr := checkJob(&specs[i], prefix)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		jobs[i] = job
		if d > 0 {
			if due == nil {
				due = make([]time.Duration, len(specs))
			}
			due[i] = d
		}
	}
	if !c.reserve(int64(len(jobs))) {
		writeError(w, &apiError{http.StatusTooManyRequests, "queue",
			fmt.Sprintf("%d jobs are waiting: retry later", c.queueSize)})
		return
	}
	ids, err := c.enqueue(jobs, due)
	if err != nil {
		writeError(w, storeError(err))
		return
	}
	w.Header().Set("Location", "/jobs/"+strconv.FormatInt(ids[0], 10))
	out := make([]byte, 0, 16+len(ids)*8)
	if single {
		out = append(out, `{"id":`...)
		out = strconv.AppendInt(out, ids[0], 10)
		out = append(out, '}')
	} else {
		out = append(out, `{"ids":[`...)
		for i, id := range ids {
			if i > 0 {
				out = append(out, ',')
			}
			out = strconv.AppendInt(out, id, 10)
		}
		out = append(out, "]}"...)
	}
	writeJSON(w, http.StatusAccepted, out)
}

// Work is the seed's collector, POST /work with form or JSON {name, delay} -> 201 Created.
func (c *Collector) Work(w http.ResponseWriter, r *http.Request) {
	if !allowOnly(w, r, http.MethodPost) {
		return
	}
	body, aerr := c.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var name string
	var rawDelay json.RawMessage
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var in struct {
			Name  string          `json:"name"`
			Delay json.RawMessage `json:"delay"`
		}
		if err := decodeStrict(body, &in); err != nil {
			writeError(w, badRequest("body", "malformed JSON: %v", err))
			return
		}
		name, rawDelay = in.Name, in.Delay
	} else {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			writeError(w, badRequest("body", "malformed form: %v", err))
			return
		}
		name = form.Get("name")
		if d := form.Get("delay"); d != "" {
			rawDelay, _ = json.Marshal(d)
		}
	}
	if name == "" {
		writeError(w, badRequest("name", "required: who to greet"))
		return
	}
	delay, err := parseDelay(rawDelay, workMaxDelay)
	if err != nil {
		writeError(w, badRequest("delay", "%v", err))
		return
	}
	if !c.reserve(1) {
		writeError(w, &apiError{http.StatusTooManyRequests, "queue",
			fmt.Sprintf("%d jobs are waiting: retry later", c.queueSize)})
		return
	}
	ids, err := c.enqueue([]WorkRequest{{Task: "hello", Name: name, Delay: delay, MaxAttempts: 1}}, nil)
	if err != nil {
		writeError(w, storeError(err))
		return
	}
	w.Header().Set("Location", "/jobs/"+strconv.FormatInt(ids[0], 10))
	writeJSON(w, http.StatusCreated, []byte(`{"id":`+strconv.FormatInt(ids[0], 10)+`}`))
}

// Stats is GET /stats: the counters, for checking that what the client saw was accepted.
func (c *Collector) Stats(w http.ResponseWriter, r *http.Request) {
	if !allowOnly(w, r, http.MethodGet) {
		return
	}
	store := "memory (none)"
	var commits map[string]int64
	if c.store != nil {
		store, commits = c.store.Describe(), c.store.Stats()
	}
	body, _ := json.Marshal(map[string]any{
		"store":     store,
		"commits":   commits,
		"accepted":  c.accepted.Load(),
		"rejected":  map[string]int64{"429": c.rejected.Load()},
		"completed": c.completed.Load(),
		"queue":     map[string]int64{"depth": c.pending.Load(), "size": c.queueSize},
		"workers":   map[string]int64{"size": int64(len(c.workers)), "busy": c.busy.Load()},
	})
	writeJSON(w, http.StatusOK, body)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8080, "port to listen on, 0 for any")
	workers := flag.Int("workers", envInt("MAX_WORKERS", 16), "workers (env MAX_WORKERS)")
	queue := flag.Int("queue-size", envInt("MAX_QUEUE", 100000), "jobs that may wait before 429 (env MAX_QUEUE)")
	maxBody := flag.Int64("max-body", 1<<20, "largest request body in bytes (413 beyond)")
	verbose := flag.Bool("v", false, "log each hello like the seed (worker%d: Hello, name!)")
	dbPath := flag.String("db", "", "commit every job to this SQLite file before its 202 (WAL, synchronous=FULL, group commit); needs a build with -tags \"durable libsqlite3\"")
	flag.Parse()
	if *workers < 1 || *queue < 1 || *maxBody < 1 {
		fmt.Fprintln(os.Stderr, "collector: -workers, -queue-size and -max-body must be positive")
		os.Exit(2)
	}
	var store jobStore
	if *dbPath != "" {
		if openStore == nil {
			fmt.Fprintln(os.Stderr, "collector: -db needs the durable build: go build -tags \"durable libsqlite3\" (see benchmarks/README.md)")
			os.Exit(2)
		}
		var err error
		if store, err = openStore(*dbPath); err != nil {
			fmt.Fprintf(os.Stderr, "collector: -db %s: %v\n", *dbPath, err)
			os.Exit(1)
		}
	}

	c := NewCollector(*workers, *queue, *maxBody, *verbose)
	c.store = store
	mux := http.NewServeMux()
	mux.HandleFunc("/jobs", c.Jobs)
	mux.HandleFunc("/work", c.Work)
	mux.HandleFunc("/stats", c.Stats)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "collector: cannot listen: %v\n", err)
		os.Exit(1)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	// Printed once listening, so a script can wait for it (and learn the port when -port 0).
	desc := "memory (none)"
	if store != nil {
		desc = store.Describe() + " at " + *dbPath
	}
	fmt.Printf("collector listening on http://%s (workers %d, queue %d, store %s, GOMAXPROCS from env)\n",
		ln.Addr(), *workers, *queue, desc)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "collector: %v\n", err)
		os.Exit(1)
	}
	for _, w := range c.workers {
		w.Stop()
	}
}
