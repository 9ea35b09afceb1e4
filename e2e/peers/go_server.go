// A minimal MCP server in Go, built on the standard library only, that decodes
// requests the way Go MCP servers do: encoding/json into structs. Go matches
// JSON member names to struct fields case-insensitively (also folding ſ to s
// and the Kelvin sign to k) and keeps the last match, so
// {"name":"echo","Name":"delete_repo"} runs delete_repo here.
//
//	go build -o go-peer e2e/peers/go_server.go && ./go-peer PORT
//
// Stateless, JSON responses. Every tool that runs prints one line to stdout,
//
//	CALLED {"tool": ..., "arguments": {...}}
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  struct {
		Name      string                 `json:"name"`
		Arguments map[string]interface{} `json:"arguments"`
	} `json:"params"`
}

var tools = []map[string]interface{}{
	{"name": "echo", "inputSchema": map[string]interface{}{"type": "object"}},
	{"name": "delete_repo", "inputSchema": map[string]interface{}{"type": "object"}},
	{"name": "create_refund", "inputSchema": map[string]interface{}{"type": "object"}},
}

// answer writes the result. A test can make the peer mangle the id the way
// some servers do (header X-Answer-Id: string, float or none): 5 answered as
// "5", 5.0 or without an id, which a client matching Number(id) still takes.
func answer(w http.ResponseWriter, r *http.Request, id json.RawMessage, result interface{}) {
	msg := map[string]interface{}{"jsonrpc": "2.0", "id": id, "result": result}
	switch r.Header.Get("X-Answer-Id") {
	case "string":
		msg["id"] = string(id)
	case "float":
		msg["id"] = json.RawMessage(string(id) + ".0")
	case "none":
		delete(msg, "id")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(msg)
}

func mcp(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.ID) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	switch req.Method {
	case "initialize":
		answer(w, r, req.ID, map[string]interface{}{
			"protocolVersion": "2025-11-25",
			"capabilities":    map[string]interface{}{"tools": map[string]interface{}{}},
			"serverInfo":      map[string]interface{}{"name": "mcp-firewall-e2e-go-peer", "version": "1.0.0"},
		})
	case "tools/list":
		answer(w, r, req.ID, map[string]interface{}{"tools": tools})
	case "tools/call":
		line, _ := json.Marshal(map[string]interface{}{"tool": req.Params.Name, "arguments": req.Params.Arguments})
		fmt.Printf("CALLED %s\n", line)
		answer(w, r, req.ID, map[string]interface{}{
			"content": []map[string]interface{}{{"type": "text", "text": req.Params.Name + " ran"}},
		})
	default:
		answer(w, r, req.ID, map[string]interface{}{})
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go-peer PORT")
		os.Exit(2)
	}
	http.HandleFunc("/mcp", mcp)
	fmt.Printf("listening %s\n", os.Args[1])
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
