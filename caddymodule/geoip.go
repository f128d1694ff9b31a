package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/geoip"
)

// geoPool shares one GeoIP reader per file across config reloads: a reload
// of the Caddy config neither re-reads the database nor starts a second
// watcher.
var geoPool = caddy.NewUsagePool()

type pooledReader struct{ *geoip.Reader }

func (p pooledReader) Destruct() error { return p.Close() }

func geoKey(path string, interval time.Duration) string {
	return path + "\x00" + interval.String()
}

func openGeoIP(path string, interval time.Duration, logger *zap.Logger) (*geoip.Reader, error) {
	v, _, err := geoPool.LoadOrNew(geoKey(path, interval), func() (caddy.Destructor, error) {
		r, err := geoip.Watch(path, geoip.Options{Interval: interval, Logger: logger.Named("geoip")})
		if err != nil {
			return nil, err
		}
		return pooledReader{r}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(pooledReader).Reader, nil
}
