package device

import (
	"fmt"
	"sync"
)

// fakeGPU is one device of a fakeDriver; a non-nil error field makes the
// matching call fail.
type fakeGPU struct {
	name, uuid        string
	total, used, free uint64
	util, temp        uint32
	reasons           uint64
	ecc               uint64
	gen, width        int

	nameErr, memErr, utilErr, tempErr, reasonsErr, eccErr, pcieErr error
}

// fakeDriver is a Driver over fakeGPUs that counts Init and Shutdown.
type fakeDriver struct {
	mu        sync.Mutex
	gpus      []fakeGPU
	initErr   error
	initPanic any
	countErr  error
	inits     int
	shutdowns int
}

var _ Driver = (*fakeDriver)(nil)

func (f *fakeDriver) Init() error {
	if f.initPanic != nil {
		panic(f.initPanic)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.initErr != nil {
		return f.initErr
	}
	f.inits++
	return nil
}

func (f *fakeDriver) Shutdown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdowns++
	return nil
}

func (f *fakeDriver) DeviceCount() (int, error) { return len(f.gpus), f.countErr }

func (f *fakeDriver) gpu(i int) (*fakeGPU, error) {
	if i < 0 || i >= len(f.gpus) {
		return nil, fmt.Errorf("fake: no device %d", i)
	}
	return &f.gpus[i], nil
}

func (f *fakeDriver) Name(i int) (string, error) {
	g, err := f.gpu(i)
	if err != nil {
		return "", err
	}
	return g.name, g.nameErr
}

func (f *fakeDriver) UUID(i int) (string, error) {
	g, err := f.gpu(i)
	if err != nil {
		return "", err
	}
	return g.uuid, nil
}

func (f *fakeDriver) Memory(i int) (uint64, uint64, uint64, error) {
	g, err := f.gpu(i)
	if err != nil {
		return 0, 0, 0, err
	}
	return g.total, g.used, g.free, g.memErr
}

func (f *fakeDriver) Utilization(i int) (uint32, error) {
	g, err := f.gpu(i)
	if err != nil {
		return 0, err
	}
	return g.util, g.utilErr
}

func (f *fakeDriver) Temperature(i int) (uint32, error) {
	g, err := f.gpu(i)
	if err != nil {
		return 0, err
	}
	return g.temp, g.tempErr
}

func (f *fakeDriver) ClockEventReasons(i int) (uint64, error) {
	g, err := f.gpu(i)
	if err != nil {
		return 0, err
	}
	return g.reasons, g.reasonsErr
}

func (f *fakeDriver) ECCErrors(i int) (uint64, error) {
	g, err := f.gpu(i)
	if err != nil {
		return 0, err
	}
	return g.ecc, g.eccErr
}

func (f *fakeDriver) PCIeLink(i int) (int, int, error) {
	g, err := f.gpu(i)
	if err != nil {
		return 0, 0, err
	}
	return g.gen, g.width, g.pcieErr
}
