package experiment

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is the record of every experiment in the data dir.
const File = "experiments.json"

// fileStore keeps the records in one JSON file, replaced atomically (write
// a temporary file, sync it, rename it over the old one, sync the dir), so
// that a crash leaves either the old record or the new one, never half.
// The records are small (decisions are coalesced) and written only when a
// decision is taken, so one file beats a database here.
type fileStore struct{ path string }

type fileFormat struct {
	Version     int      `json:"version"`
	Experiments []Record `json:"experiments"`
}

func (s *fileStore) load() ([]Record, error) {
	if s == nil {
		return nil, nil
	}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("experiments: read %s: %w", s.path, err)
	}
	var f fileFormat
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("experiments: %s is corrupt: %w", s.path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("experiments: %s has version %d, want 1", s.path, f.Version)
	}
	return f.Experiments, nil
}

func (s *fileStore) save(recs []Record) error {
	if s == nil {
		return nil
	}
	b, err := json.MarshalIndent(fileFormat{Version: 1, Experiments: recs}, "", " ")
	if err != nil {
		return fmt.Errorf("experiments: encode: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, ".experiments-*.json")
	if err != nil {
		return fmt.Errorf("experiments: save: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("experiments: save: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("experiments: save: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("experiments: save: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("experiments: save: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
