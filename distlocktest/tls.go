package distlocktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// CA is a certificate authority made for one test run, with a server
// certificate for 127.0.0.1 and localhost and a client certificate, both
// signed by it, written as PEM files in Dir (ca.crt, server.crt,
// server.key, client.crt, client.key). Nothing comes from outside the test.
type CA struct {
	Dir    string
	pool   *x509.CertPool
	client tls.Certificate
}

// NewCA makes a CA in a directory of t's, removed when t ends.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := MakeCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// MakeCA makes a CA whose files are written in dir.
func MakeCA(dir string) (*CA, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "distlocktest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	ca := &CA{Dir: dir, pool: x509.NewCertPool()}
	ca.pool.AddCert(caCert)
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certDER, keyDER []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "distlocktest " + name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		if certDER, err = x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey); err != nil {
			return nil, nil, err
		}
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
		return certDER, keyDER, err
	}
	for i, name := range []string{"server", "client"} {
		usage := x509.ExtKeyUsageServerAuth
		if name == "client" {
			usage = x509.ExtKeyUsageClientAuth
		}
		certDER, keyDER, err := leaf(name, int64(i+2), usage)
		if err != nil {
			return nil, err
		}
		if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", certDER); err != nil {
			return nil, err
		}
		if err := writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", keyDER); err != nil {
			return nil, err
		}
		if name == "client" {
			if ca.client, err = tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
				pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
				return nil, err
			}
		}
	}
	return ca, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// ClientConfig returns a TLS configuration that trusts the CA, and
// presents the client certificate when withCert.
func (ca *CA) ClientConfig(withCert bool) *tls.Config {
	cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cfg.Certificates = []tls.Certificate{ca.client}
	}
	return cfg
}

// ServerArgs returns the redis-server arguments that serve TLS on port
// with the CA's server certificate; clientCerts makes the server require a
// client certificate signed by the CA.
func (ca *CA) ServerArgs(port int, clientCerts bool) []string {
	auth := "no"
	if clientCerts {
		auth = "yes"
	}
	return []string{
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(ca.Dir, "server.crt"),
		"--tls-key-file", filepath.Join(ca.Dir, "server.key"),
		"--tls-ca-cert-file", filepath.Join(ca.Dir, "ca.crt"),
		"--tls-auth-clients", auth,
	}
}

// NewTLSServer starts a Server for t that also serves TLS (see
// CA.ServerArgs) on a free port, given by TLSAddr; the plain port stays
// open for the test's own commands (Do). extra are more arguments.
func NewTLSServer(t testing.TB, ca *CA, clientCerts bool, extra ...string) *Server {
	t.Helper()
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s, err := StartServer(append(ca.ServerArgs(port, clientCerts), extra...)...)
		if err == nil {
			s.tlsPort = port
			t.Cleanup(func() { s.Close() })
			return s
		}
		lastErr = err // the TLS port may have been taken meanwhile
	}
	t.Fatal(fmt.Errorf("distlocktest: start a TLS redis-server: %w", lastErr))
	return nil
}

// TLSAddr returns the server's TLS address, "127.0.0.1:port", or "" when
// it serves no TLS.
func (s *Server) TLSAddr() string {
	if s.tlsPort == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort))
}
