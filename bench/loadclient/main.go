// Command loadclient is the one load client of bench/side_by_side.py: it
// connects many WebSocket users to Orderpush (protocol orderpush.v1), to a
// python-socketio server (Engine.IO 4 over WebSocket) or to Centrifugo (its
// JSON client protocol, centrifugo.go), produces personal messages the way
// each system takes them in (Orderpush: order events to Kafka;
// python-socketio: AsyncRedisManager's JSON "emit" messages on Redis pub/sub;
// Centrifugo: "publish" commands to its server HTTP API, /api/batch requests
// of one tick's messages) and measures send -> receive latency, lost and duplicated messages.
// It is compiled so that the load generator is never the bottleneck: the
// servers under test run on the other core.
//
// Modes (-mode):
//
//	steps    connect -users, then for each of -rates send rate*step-s
//	         messages evenly over -step-s seconds and wait for them (-drain-s)
//	idle     connect -users (timed), write -ready-file, hold -hold-s (the
//	         driver samples RSS), then -idle-rate messages/s for -idle-s
//	restart  connect -users, write -ready-file, send -restart-rate messages/s
//	         for -restart-s while the driver kills and restarts the server;
//	         clients reconnect (Orderpush: with their cursor; Centrifugo:
//	         recovering from their last offset and epoch); the driver
//	         writes the restarted server's listen time (unix ns) to -listen-file
//
// Every message goes to one user, round robin; each user has one connection.
// The result is one JSON object on stdout.
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

type config struct {
	system      string
	url         string
	users       int
	userPrefix  string
	secret      string
	kafka       string
	topic       string
	lingerMs    float64
	redisAddr   string
	channel     string
	concurrency int
	mode        string
	rates       []int
	stepS       float64
	drainS      float64
	stopP99Ms   float64
	holdS       float64
	idleRate    int
	idleS       float64
	restartRate int
	restartS    float64
	apiURL      string
	apiKey      string
	apiInFlight int
	namespace   string
	readyFile   string
	listenFile  string
	compression websocket.CompressionMode
}

// Per message (by sequence number): when it was sent and first received (unix ns).
var (
	sentNs     []int64
	recvNs     []int64
	dups       atomic.Int64
	wrongUser  atomic.Int64
	stopping   atomic.Bool
	disconnect atomic.Int64
)

func main() {
	cfg := parseFlags()
	users := make([]*client, cfg.users)
	for i := range users {
		user := fmt.Sprintf("%s%05d", cfg.userPrefix, i)
		users[i] = &client{idx: i, user: user, token: jwtHS256(user, cfg.secret), cfg: cfg}
	}
	total := 0
	switch cfg.mode {
	case "steps":
		for _, r := range cfg.rates {
			total += int(float64(r)*cfg.stepS) + 1
		}
	case "idle":
		total = int(float64(cfg.idleRate)*cfg.idleS) + 1
	case "restart":
		total = int(float64(cfg.restartRate)*cfg.restartS) + 1
	default:
		fail("unknown -mode %q", cfg.mode)
	}
	sentNs = make([]int64, total)
	recvNs = make([]int64, total)

	prod := newProducer(cfg, users)
	defer prod.close()

	result := map[string]any{"mode": cfg.mode, "system": cfg.system, "users": cfg.users}
	connectS, failed := connectAll(users, cfg.concurrency)
	result["connect_s"] = round3(connectS)
	result["connect_failed"] = failed
	if failed > 0 {
		result["error"] = "some clients could not connect"
		emit(result)
		os.Exit(1)
	}
	if cfg.readyFile != "" {
		must(os.WriteFile(cfg.readyFile, []byte("ready\n"), 0o644))
	}
	switch cfg.mode {
	case "steps":
		result["steps"] = runSteps(cfg, prod)
	case "idle":
		time.Sleep(dur(cfg.holdS))
		first := send(prod, cfg.idleRate, cfg.idleS, 0)
		drain(first, len(sentNs), cfg.drainS)
		result["traffic"] = summarize(cfg.idleRate, 0, first)
	case "restart":
		n := send(prod, cfg.restartRate, cfg.restartS, 0)
		drain(0, n, cfg.drainS)
		result["traffic"] = summarize(cfg.restartRate, 0, n)
		result["restart"] = restartFigures(cfg, users, n)
	}
	result["disconnects"] = disconnect.Load()
	result["produce_errors"] = prod.errors()
	stopping.Store(true)
	emit(result)
	// Closing thousands of sockets one by one would only slow the driver down.
	os.Exit(0)
}

func parseFlags() *config {
	c := &config{}
	var rates string
	flag.StringVar(&c.system, "system", "orderpush", "orderpush | socketio | centrifugo")
	flag.StringVar(&c.url, "url", "", "ws://HOST:PORT/ws (orderpush), ws://HOST:PORT (socketio), ws://HOST:PORT/connection/websocket (centrifugo)")
	flag.IntVar(&c.users, "users", 1000, "users, one connection each")
	flag.StringVar(&c.userPrefix, "user-prefix", "bench-", "user id prefix")
	flag.StringVar(&c.secret, "secret", "", "HS256 JWT secret")
	flag.StringVar(&c.kafka, "kafka", "127.0.0.1:9092", "Kafka bootstrap (orderpush)")
	flag.StringVar(&c.topic, "topic", "orders", "Kafka topic on the wire, prefix included (orderpush)")
	flag.Float64Var(&c.lingerMs, "linger-ms", 1, "Kafka producer linger (orderpush)")
	flag.StringVar(&c.redisAddr, "redis", "127.0.0.1:6379", "Redis HOST:PORT (socketio)")
	flag.StringVar(&c.channel, "channel", "socketio", "Redis channel of the AsyncRedisManager (socketio)")
	flag.StringVar(&c.apiURL, "api", "", "Centrifugo server API batch endpoint, http://HOST:PORT/api/batch (centrifugo)")
	flag.StringVar(&c.apiKey, "api-key", "", "Centrifugo server API key (centrifugo)")
	flag.IntVar(&c.apiInFlight, "api-in-flight", 1, "Centrifugo API requests in flight at most (centrifugo)")
	flag.StringVar(&c.namespace, "namespace", "personal", "Centrifugo namespace of the personal channels NAMESPACE:#USER (centrifugo)")
	flag.IntVar(&c.concurrency, "connect-concurrency", 200, "handshakes in flight")
	flag.StringVar(&c.mode, "mode", "steps", "steps | idle | restart")
	flag.StringVar(&rates, "rates", "500,1000,2000,4000", "steps mode: messages/s per step")
	flag.Float64Var(&c.stepS, "step-s", 10, "steps mode: seconds per step")
	flag.Float64Var(&c.drainS, "drain-s", 10, "after sending, wait at most this long for arrivals")
	flag.Float64Var(&c.stopP99Ms, "stop-p99-ms", 2000, "steps mode: stop after a step with a higher p99")
	flag.Float64Var(&c.holdS, "hold-s", 3, "idle mode: idle time after connecting")
	flag.IntVar(&c.idleRate, "idle-rate", 500, "idle mode: messages/s after the hold")
	flag.Float64Var(&c.idleS, "idle-s", 30, "idle mode: seconds of traffic")
	flag.IntVar(&c.restartRate, "restart-rate", 200, "restart mode: messages/s")
	flag.Float64Var(&c.restartS, "restart-s", 30, "restart mode: seconds of traffic")
	flag.StringVar(&c.readyFile, "ready-file", "", "written once every user is connected")
	flag.StringVar(&c.listenFile, "listen-file", "", "restart mode: the driver writes the restart's listen time (unix ns) here")
	compress := flag.String("compression", "disabled", "permessage-deflate offered: disabled | context-takeover | no-context-takeover")
	flag.Parse()
	switch *compress {
	case "disabled":
		c.compression = websocket.CompressionDisabled
	case "context-takeover":
		c.compression = websocket.CompressionContextTakeover
	case "no-context-takeover":
		c.compression = websocket.CompressionNoContextTakeover
	default:
		fail("bad -compression %q", *compress)
	}
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fail("bad -rates entry %q", r)
		}
		c.rates = append(c.rates, n)
	}
	if c.url == "" || c.secret == "" {
		fail("-url and -secret are required")
	}
	return c
}

// ---- connections -----------------------------------------------------------

type client struct {
	idx   int
	user  string
	token string
	cfg   *config

	mu       sync.Mutex
	cursor   string  // orderpush: the last cursor seen
	epoch    string  // centrifugo: the personal channel's stream epoch
	offset   uint64  // centrifugo: the last stream offset seen
	readyNs  []int64 // when each handshake completed
	lastRecv int64
}

func (c *client) markReady() {
	c.mu.Lock()
	c.readyNs = append(c.readyNs, time.Now().UnixNano())
	c.mu.Unlock()
}

func connectAll(users []*client, concurrency int) (float64, int) {
	started := time.Now()
	var failed atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, concurrency)
	for _, c := range users {
		wg.Add(1)
		slots <- struct{}{}
		go func(c *client) {
			defer wg.Done()
			conn, err := c.handshake(context.Background())
			<-slots
			if err != nil {
				failed.Add(1)
				fmt.Fprintf(os.Stderr, "connect %s: %v\n", c.user, err)
				return
			}
			go c.serve(conn)
		}(c)
	}
	wg.Wait()
	return time.Since(started).Seconds(), int(failed.Load())
}

// serve reads until the connection drops, then reconnects until it succeeds
// (the restart mode kills the server under the clients).
func (c *client) serve(conn *websocket.Conn) {
	for {
		c.readLoop(conn)
		if stopping.Load() {
			return
		}
		disconnect.Add(1)
		delay := 50 * time.Millisecond
		for {
			if stopping.Load() {
				return
			}
			time.Sleep(delay/2 + time.Duration(rand.Int63n(int64(delay))))
			var err error
			conn, err = c.handshake(context.Background())
			if err == nil {
				break
			}
			delay = min(delay*2, 500*time.Millisecond)
		}
	}
}

func (c *client) handshake(ctx context.Context) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch c.cfg.system {
	case "socketio":
		return c.handshakeSocketIO(ctx)
	case "centrifugo":
		return c.handshakeCentrifugo(ctx)
	}
	return c.handshakeOrderpush(ctx)
}

func (c *client) handshakeOrderpush(ctx context.Context) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, c.cfg.url, &websocket.DialOptions{
		Subprotocols:    []string{"orderpush.v1"},
		CompressionMode: c.cfg.compression,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	auth := map[string]string{"type": "auth", "token": c.token}
	c.mu.Lock()
	if c.cursor != "" {
		auth["cursor"] = c.cursor
	}
	c.mu.Unlock()
	data, _ := json.Marshal(auth)
	if err := conn.Write(ctx, websocket.MessageText, data); err != nil {
		conn.CloseNow()
		return nil, err
	}
	for {
		_, frame, err := conn.Read(ctx)
		if err != nil {
			conn.CloseNow()
			return nil, err
		}
		kind := c.onOrderpushFrame(frame)
		if kind == "snapshot" || kind == "resumed" {
			c.markReady()
			return conn, nil
		}
	}
}

type opFrame struct {
	Type   string `json:"type"`
	Cursor string `json:"cursor"`
	Event  *struct {
		UserID string  `json:"user_id"`
		Data   payload `json:"data"`
	} `json:"event"`
}

type payload struct {
	I int64  `json:"i"`
	T int64  `json:"t"`
	U string `json:"u"`
}

func (c *client) onOrderpushFrame(frame []byte) string {
	var f opFrame
	if err := json.Unmarshal(frame, &f); err != nil {
		return ""
	}
	if f.Cursor != "" {
		c.mu.Lock()
		c.cursor = f.Cursor
		c.mu.Unlock()
	}
	if f.Type == "event" && f.Event != nil {
		c.arrived(f.Event.Data.I, f.Event.UserID)
	}
	return f.Type
}

func (c *client) handshakeSocketIO(ctx context.Context) (*websocket.Conn, error) {
	url := strings.TrimRight(c.cfg.url, "/") + "/socket.io/?EIO=4&transport=websocket"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		CompressionMode: c.cfg.compression,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	connected := false
	for {
		_, frame, err := conn.Read(ctx)
		if err != nil {
			conn.CloseNow()
			return nil, err
		}
		switch {
		case bytes.HasPrefix(frame, []byte("0{")): // Engine.IO open
			auth, _ := json.Marshal(map[string]string{"token": c.token})
			if err := conn.Write(ctx, websocket.MessageText, append([]byte("40"), auth...)); err != nil {
				conn.CloseNow()
				return nil, err
			}
		case bytes.HasPrefix(frame, []byte("40")): // Socket.IO connect ack
			connected = true
		case bytes.HasPrefix(frame, []byte("44")):
			conn.CloseNow()
			return nil, fmt.Errorf("refused: %s", frame)
		default:
			c.onSocketIOFrame(ctx, conn, frame)
		}
		if connected {
			c.markReady()
			return conn, nil
		}
	}
}

func (c *client) onSocketIOFrame(ctx context.Context, conn *websocket.Conn, frame []byte) {
	switch {
	case len(frame) == 1 && frame[0] == '2': // Engine.IO ping -> pong
		_ = conn.Write(ctx, websocket.MessageText, []byte("3"))
	case bytes.HasPrefix(frame, []byte("42[")):
		var parts []json.RawMessage
		if err := json.Unmarshal(frame[2:], &parts); err != nil || len(parts) < 2 {
			return
		}
		var p payload
		if err := json.Unmarshal(parts[1], &p); err != nil {
			return
		}
		c.arrived(p.I, p.U)
	}
}

func (c *client) readLoop(conn *websocket.Conn) {
	ctx := context.Background()
	defer conn.CloseNow()
	for {
		_, frame, err := conn.Read(ctx)
		if err != nil {
			return
		}
		switch c.cfg.system {
		case "socketio":
			c.onSocketIOFrame(ctx, conn, frame)
		case "centrifugo":
			_, _ = c.onCentrifugoFrame(ctx, conn, frame)
		default:
			c.onOrderpushFrame(frame)
		}
	}
}

func (c *client) arrived(seq int64, user string) {
	now := time.Now().UnixNano()
	if user != c.user {
		wrongUser.Add(1)
		return
	}
	if seq < 0 || seq >= int64(len(recvNs)) {
		return
	}
	if !atomic.CompareAndSwapInt64(&recvNs[seq], 0, now) {
		dups.Add(1)
	}
	atomic.StoreInt64(&c.lastRecv, now)
}

// ---- producing ---------------------------------------------------------------

type producer struct {
	cfg      *config
	users    []*client
	version  []int64
	kafka    *kgo.Client
	redis    *redis.Client
	api      *centrifugoAPI
	failures atomic.Int64
	next     int64
}

func newProducer(cfg *config, users []*client) *producer {
	p := &producer{cfg: cfg, users: users, version: make([]int64, len(users))}
	switch cfg.system {
	case "orderpush":
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(strings.Split(cfg.kafka, ",")...),
			kgo.DefaultProduceTopic(cfg.topic),
			kgo.ProducerLinger(time.Duration(cfg.lingerMs*float64(time.Millisecond))),
			kgo.ProducerBatchCompression(kgo.NoCompression()),
			kgo.RequiredAcks(kgo.AllISRAcks()),
		)
		must(err)
		p.kafka = cl
	case "socketio":
		p.redis = redis.NewClient(&redis.Options{Addr: cfg.redisAddr, PoolSize: 4})
	case "centrifugo":
		p.api = newCentrifugoAPI(cfg)
	default:
		fail("unknown -system %q", cfg.system)
	}
	return p
}

func (p *producer) errors() int64 {
	if p.api != nil {
		return p.failures.Load() + p.api.failures.Load()
	}
	return p.failures.Load()
}

func (p *producer) close() {
	if p.kafka != nil {
		p.kafka.Close()
	}
	if p.redis != nil {
		_ = p.redis.Close()
	}
}

var occurredAt = time.Now().UTC().Format("2006-01-02T15:04:05.000Z")

// sendBatch sends messages next .. next+n-1 (one tick's worth).
func (p *producer) sendBatch(n int) {
	ctx := context.Background()
	var pipe redis.Pipeliner
	if p.redis != nil {
		pipe = p.redis.Pipeline()
	}
	for k := 0; k < n; k++ {
		seq := p.next
		if seq >= int64(len(sentNs)) {
			break
		}
		p.next++
		u := int(seq % int64(len(p.users)))
		user := p.users[u].user
		now := time.Now().UnixNano()
		sentNs[seq] = now
		if p.kafka != nil {
			p.version[u]++
			order := user + "-o"
			value := fmt.Sprintf(
				`{"event_id":"b%d-%d","type":"order.confirmed","order_id":%q,"user_id":%q,`+
					`"occurred_at":%q,"status":"confirmed","version":%d,"data":{"i":%d,"t":%d,"u":%q}}`,
				now, seq, order, user, occurredAt, p.version[u], seq, now, user)
			p.kafka.Produce(ctx, &kgo.Record{Key: []byte(order), Value: []byte(value)},
				func(_ *kgo.Record, err error) {
					if err != nil {
						p.failures.Add(1)
					}
				})
		} else if p.api != nil {
			p.api.add(user, seq, now)
		} else {
			msg := fmt.Sprintf(
				`{"method":"emit","event":"order","data":[{"i":%d,"t":%d,"u":%q}],"binary":false,`+
					`"namespace":"/","room":%q,"skip_sid":null,"callback":null,"host_id":"loadclient"}`,
				seq, now, user, user)
			pipe.Publish(ctx, p.cfg.channel, msg)
		}
	}
	if pipe != nil && pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			p.failures.Add(1)
		}
	}
	if p.api != nil {
		p.api.submit()
	}
}

// send paces rate messages/s for durationS seconds (1 ms ticks); returns the
// sequence number after the last message sent.
func send(p *producer, rate int, durationS float64, _ int) int {
	total := int(float64(rate) * durationS)
	first := p.next
	started := time.Now()
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	for int(p.next-first) < total {
		<-ticker.C
		due := int(float64(rate) * time.Since(started).Seconds())
		if due > total {
			due = total
		}
		if n := due - int(p.next-first); n > 0 {
			p.sendBatch(n)
		}
	}
	if p.kafka != nil {
		_ = p.kafka.Flush(context.Background())
	}
	if p.api != nil {
		p.api.flush()
	}
	return int(p.next)
}

// drain waits until every message in [from, to) arrived, or drainS passed.
func drain(from, to int, drainS float64) {
	deadline := time.Now().Add(dur(drainS))
	for time.Now().Before(deadline) {
		missing := false
		for i := from; i < to; i++ {
			if atomic.LoadInt64(&recvNs[i]) == 0 {
				missing = true
				break
			}
		}
		if !missing {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- figures -----------------------------------------------------------------

type stepResult struct {
	Rate         int     `json:"rate"`
	Sent         int     `json:"sent"`
	Received     int     `json:"received"`
	Lost         int     `json:"lost"`
	Duplicated   int64   `json:"duplicated"`
	WrongUser    int64   `json:"wrong_user"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	AchievedRate float64 `json:"achieved_rate"`
}

func summarize(rate, from, to int) stepResult {
	var lat []float64
	lost := 0
	var firstSent, lastSent int64
	for i := from; i < to; i++ {
		s, r := sentNs[i], atomic.LoadInt64(&recvNs[i])
		if i == from {
			firstSent = s
		}
		lastSent = s
		if r == 0 {
			lost++
			continue
		}
		lat = append(lat, float64(r-s)/1e6)
	}
	sort.Float64s(lat)
	res := stepResult{Rate: rate, Sent: to - from, Received: len(lat), Lost: lost,
		Duplicated: dups.Load(), WrongUser: wrongUser.Load()}
	if len(lat) > 0 {
		res.P50Ms = round3(quantile(lat, 0.50))
		res.P99Ms = round3(quantile(lat, 0.99))
		res.MaxMs = round3(lat[len(lat)-1])
	}
	if lastSent > firstSent {
		res.AchievedRate = round3(float64(to-from-1) / (float64(lastSent-firstSent) / 1e9))
	}
	return res
}

func runSteps(cfg *config, p *producer) []stepResult {
	var out []stepResult
	for _, rate := range cfg.rates {
		dupsBefore, wrongBefore := dups.Load(), wrongUser.Load()
		from := int(p.next)
		to := send(p, rate, cfg.stepS, 0)
		drain(from, to, cfg.drainS)
		res := summarize(rate, from, to)
		res.Duplicated -= dupsBefore
		res.WrongUser -= wrongBefore
		out = append(out, res)
		fmt.Fprintf(os.Stderr, "step %d/s: sent %d lost %d dup %d p50 %.1f ms p99 %.1f ms\n",
			rate, res.Sent, res.Lost, res.Duplicated, res.P50Ms, res.P99Ms)
		// Losses are counted, not a reason to stop: the table wants the p50
		// of every step the server still answers in time.
		if res.P99Ms > cfg.stopP99Ms || res.Received == 0 {
			break
		}
		time.Sleep(time.Second) // let the server settle between steps
	}
	return out
}

// restartFigures: from the restarted server's listen time L, how long until
// every client is current again: reconnected, and holding every message sent
// before L that it will ever get.
func restartFigures(cfg *config, users []*client, n int) map[string]any {
	raw, err := os.ReadFile(cfg.listenFile)
	if err != nil {
		return map[string]any{"error": "no listen time from the driver"}
	}
	listen, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	must(err)
	current := listen
	// The two parts of "current": the last client back, the last message
	// sent before L delivered.
	reconnected, delivered := listen, listen
	notReconnected := 0
	for _, c := range users {
		c.mu.Lock()
		var back int64
		for _, t := range c.readyNs {
			if t >= listen && (back == 0 || t < back) {
				back = t
			}
		}
		c.mu.Unlock()
		if back == 0 {
			notReconnected++
			continue
		}
		reconnected = max(reconnected, back)
	}
	current = max(current, reconnected)
	lostBefore, lostAfter := 0, 0
	for i := 0; i < n; i++ {
		r := atomic.LoadInt64(&recvNs[i])
		if sentNs[i] < listen {
			if r == 0 {
				lostBefore++
			} else {
				delivered = max(delivered, r)
			}
		} else if r == 0 {
			lostAfter++
		}
	}
	current = max(current, delivered)
	return map[string]any{
		"all_current_after_listen_s": round3(float64(current-listen) / 1e9),
		"reconnected_after_listen_s": round3(float64(reconnected-listen) / 1e9),
		"delivered_after_listen_s":   round3(float64(delivered-listen) / 1e9),
		"not_reconnected":            notReconnected,
		"lost_sent_before_listen":    lostBefore,
		"lost_sent_after_listen":     lostAfter,
	}
}

// ---- helpers -----------------------------------------------------------------

func quantile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(len(sorted)-1, i))]
}

func jwtHS256(sub, secret string) string {
	enc := base64.RawURLEncoding
	now := time.Now().Unix()
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(map[string]any{"sub": sub, "iat": now, "exp": now + 6*3600})
	signing := header + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

func dur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func emit(v any) {
	out, _ := json.Marshal(v)
	fmt.Println(string(out))
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadclient: "+format+"\n", args...)
	os.Exit(2)
}
