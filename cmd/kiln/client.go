package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// client is a small HTTP client for kiln's /v1 API.
type client struct {
	base string
	http *http.Client
}

func newClient(addr string) *client {
	if addr == "" {
		addr = os.Getenv("KILN_ADDR")
	}
	if addr == "" {
		addr = "http://127.0.0.1:8188"
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &client{base: strings.TrimRight(addr, "/"), http: &http.Client{Timeout: 30 * time.Second}}
}

// apiError is an error answer from the API.
type apiError struct {
	Status  int
	Type    string `json:"type"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Type, e.Status, e.Message)
}

func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
	contentType := ""
	if body != nil {
		contentType = "application/json"
	}
	data, err := c.send(ctx, method, path, contentType, "", body)
	if err != nil {
		return err
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// send makes one API call and returns the answer's body, or the API's
// error (or the HTTP status) as an *apiError. A token, when given, is sent
// as the admin bearer token.
func (c *client) send(ctx context.Context, method, path, contentType, token string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is kiln running at %s? %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		var env struct {
			Error apiError `json:"error"`
		}
		if json.Unmarshal(data, &env) == nil && env.Error.Type != "" {
			env.Error.Status = resp.StatusCode
			return nil, &env.Error
		}
		return nil, &apiError{Status: resp.StatusCode, Type: "http_error", Message: strings.TrimSpace(string(data))}
	}
	return data, nil
}
