// Centrifugo (-system centrifugo): its JSON client protocol over WebSocket
// for the users, its server HTTP API for the messages.
//
// Each user is subscribed server-side to its personal channel NAMESPACE:#USER
// (the server's subscribe_to_user_personal_channel, from the token's sub
// claim; "#" makes it user-limited), so one connect command is the whole handshake, as one auth frame is
// for Orderpush. The channel keeps a history in Redis; after a disconnect the
// connect command asks to recover that subscription from the last offset and
// epoch seen, and the recovered publications count like live ones.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

type centrifugoPub struct {
	Data   payload `json:"data"`
	Offset uint64  `json:"offset"`
}

type centrifugoSub struct {
	Recoverable  bool            `json:"recoverable"`
	Epoch        string          `json:"epoch"`
	Offset       uint64          `json:"offset"`
	Recovered    bool            `json:"recovered"`
	Publications []centrifugoPub `json:"publications"`
}

type centrifugoError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

// centrifugoReply is one line of a server frame: a reply to a command (by id)
// or a push (id 0).
type centrifugoReply struct {
	ID      uint32           `json:"id"`
	Error   *centrifugoError `json:"error"`
	Connect *struct {
		Subs map[string]centrifugoSub `json:"subs"`
	} `json:"connect"`
	Push *struct {
		Pub *centrifugoPub `json:"pub"`
	} `json:"push"`
}

const centrifugoConnectID = 1

// personalChannel is Centrifugo's name for a user's personal channel.
func personalChannel(namespace, user string) string { return namespace + ":#" + user }

func (c *client) personalChannel() string { return personalChannel(c.cfg.namespace, c.user) }

func (c *client) handshakeCentrifugo(ctx context.Context) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, c.cfg.url, &websocket.DialOptions{
		CompressionMode: c.cfg.compression,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	connect := map[string]any{"token": c.token, "name": "loadclient"}
	c.mu.Lock()
	if c.epoch != "" {
		// The position this connection had: the server sends what was
		// published since (or reports that it could not: recovered false).
		connect["subs"] = map[string]any{c.personalChannel(): map[string]any{
			"recover": true, "epoch": c.epoch, "offset": c.offset,
		}}
	}
	c.mu.Unlock()
	data, _ := json.Marshal(map[string]any{"id": centrifugoConnectID, "connect": connect})
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
		connected, err := c.onCentrifugoFrame(ctx, conn, frame)
		if err != nil {
			conn.CloseNow()
			return nil, err
		}
		if connected {
			c.markReady()
			return conn, nil
		}
	}
}

// onCentrifugoFrame handles one frame: the server joins several replies and
// pushes into one frame, one JSON object a line. Reports whether the frame
// held the connect reply.
func (c *client) onCentrifugoFrame(ctx context.Context, conn *websocket.Conn, frame []byte) (bool, error) {
	connected := false
	for _, line := range bytes.Split(frame, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if bytes.Equal(line, []byte("{}")) { // the server's ping: answer with a pong
			_ = conn.Write(ctx, websocket.MessageText, []byte("{}"))
			continue
		}
		var r centrifugoReply
		if err := json.Unmarshal(line, &r); err != nil {
			continue
		}
		switch {
		case r.ID == centrifugoConnectID && r.Error != nil:
			return false, fmt.Errorf("connect refused: %d %s", r.Error.Code, r.Error.Message)
		case r.ID == centrifugoConnectID && r.Connect != nil:
			sub, ok := r.Connect.Subs[c.personalChannel()]
			if !ok {
				return false, fmt.Errorf("no subscription to %s in the connect reply (server config?)", c.personalChannel())
			}
			for i := range sub.Publications {
				c.centrifugoPublication(&sub.Publications[i])
			}
			c.mu.Lock()
			c.epoch = sub.Epoch
			c.offset = max(c.offset, sub.Offset)
			c.mu.Unlock()
			connected = true
		case r.Push != nil && r.Push.Pub != nil:
			c.centrifugoPublication(r.Push.Pub)
		}
	}
	return connected, nil
}

func (c *client) centrifugoPublication(p *centrifugoPub) {
	c.mu.Lock()
	c.offset = max(c.offset, p.Offset)
	c.mu.Unlock()
	c.arrived(p.Data.I, p.Data.U)
}

// centrifugoAPI is the publishing backend: the messages of one tick go out as
// one /api/batch request ("parallel", so the server may pipeline their Redis
// calls), as the socketio mode pipelines one tick's PUBLISH commands. The
// server under test is its own ingest, so a request waits for its CPU: the
// ticks only stamp and queue (as Kafka's producer buffers), one goroutine
// posts what is queued, one request at a time, joining the ticks that queued
// up meanwhile. A request that got no HTTP reply (the server down in the
// restart scenario, a connection reset) is posted again until it gets one,
// as a backend would; if the dead server had published part of it already,
// the client counts the repeats as duplicates.
type centrifugoAPI struct {
	url       string
	key       string
	namespace string
	http      *http.Client
	failures  atomic.Int64 // messages the server answered with an error

	mu       sync.Mutex
	queued   [][]byte // one encoded "publish" command per message, in send order
	tick     [][]byte // the commands of the tick being built (sender only)
	inFlight int      // requests posted and not yet answered
	wake     chan struct{}
}

// centrifugoMaxBatch bounds one request when the poster has fallen behind.
const centrifugoMaxBatch = 1000

func newCentrifugoAPI(cfg *config) *centrifugoAPI {
	if cfg.apiURL == "" || cfg.apiKey == "" {
		fail("-system centrifugo needs -api and -api-key")
	}
	transport := &http.Transport{
		MaxIdleConnsPerHost: 2,
		DisableCompression:  true,
		Proxy:               nil, // loopback only: no proxy from the environment
	}
	a := &centrifugoAPI{
		url:       cfg.apiURL,
		key:       cfg.apiKey,
		namespace: cfg.namespace,
		http:      &http.Client{Transport: transport, Timeout: 30 * time.Second},
		wake:      make(chan struct{}, 1),
	}
	for range max(1, cfg.apiInFlight) {
		go a.post()
	}
	return a
}

// add encodes one message of the current tick.
func (a *centrifugoAPI) add(user string, seq, sentNs int64) {
	cmd := fmt.Appendf(nil, `{"publish":{"channel":%s,"data":{"i":%d,"t":%d,"u":%q}}}`,
		strconv.Quote(personalChannel(a.namespace, user)), seq, sentNs, user)
	a.tick = append(a.tick, cmd)
}

// submit hands the tick's messages to the poster.
func (a *centrifugoAPI) submit() {
	if len(a.tick) == 0 {
		return
	}
	a.mu.Lock()
	a.queued = append(a.queued, a.tick...)
	a.mu.Unlock()
	a.tick = a.tick[:0]
	a.signal()
}

func (a *centrifugoAPI) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// flush waits until every submitted message has had its reply (at most 60 s:
// a server that stays down leaves them lost).
func (a *centrifugoAPI) flush() {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		done := len(a.queued) == 0 && a.inFlight == 0
		a.mu.Unlock()
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (a *centrifugoAPI) post() {
	var body bytes.Buffer
	for range a.wake {
		for {
			a.mu.Lock()
			n := min(len(a.queued), centrifugoMaxBatch)
			if n == 0 {
				a.mu.Unlock()
				break
			}
			batch := a.queued[:n]
			a.queued = a.queued[n:]
			a.inFlight++
			more := len(a.queued) > 0
			a.mu.Unlock()
			if more { // another poster, if one is idle, takes the rest
				a.signal()
			}

			body.Reset()
			body.WriteString(`{"parallel":true,"commands":[`)
			for i, cmd := range batch {
				if i > 0 {
					body.WriteByte(',')
				}
				body.Write(cmd)
			}
			body.WriteString(`]}`)
			delay := 20 * time.Millisecond
			for !a.send(body.Bytes(), len(batch)) && !stopping.Load() {
				time.Sleep(delay)
				delay = min(delay*2, 200*time.Millisecond)
			}
			a.mu.Lock()
			a.inFlight--
			a.mu.Unlock()
		}
	}
}

// send posts one batch; false when no HTTP reply came back (post it again).
func (a *centrifugoAPI) send(body []byte, count int) bool {
	req, err := http.NewRequest(http.MethodPost, a.url, bytes.NewReader(body))
	must(err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", a.key)
	resp, err := a.http.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return false
	}
	var reply struct {
		Replies []struct {
			Error *centrifugoError `json:"error"`
		} `json:"replies"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &reply) != nil || len(reply.Replies) != count {
		fmt.Fprintf(os.Stderr, "centrifugo api: HTTP %d: %.200s\n", resp.StatusCode, raw)
		a.failures.Add(int64(count))
		return true
	}
	for _, r := range reply.Replies {
		if r.Error != nil {
			a.failures.Add(1)
		}
	}
	return true
}
