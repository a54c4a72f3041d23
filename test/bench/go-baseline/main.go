// Go baseline for `npm run bench` (optional: used only when a Go toolchain is on PATH). It issues X509-SVIDs the way
// Go-based CAs do (SPIRE, Istio, cert-manager, OSM mint with crypto/x509), with meshca's profile, for the two
// variants of issue #2, and prints certs/s as JSON. Run with GOMAXPROCS=1 for a per-core figure:
//
//	go run ./test/bench/go-baseline -ms 2000
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"math/big"
	"net/url"
	"os"
	"runtime"
	"time"
)

type result struct {
	GoVersion   string  `json:"goVersion"`
	GoMaxProcs  int     `json:"gomaxprocs"`
	GenerateKey float64 `json:"generateKeyPerSec"`
	Csr         float64 `json:"csrPerSec"`
	RawSign     float64 `json:"p256SignPerSec"`
	RawKeygen   float64 `json:"p256KeygenPerSec"`
	MillisEach  int     `json:"msEach"`
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func serial() *big.Int {
	b := make([]byte, 20)
	_, err := rand.Read(b)
	must(err)
	b[0] &= 0x7f // positive, at most 20 octets
	b[0] |= 0x01 // never zero
	return new(big.Int).SetBytes(b)
}

func skid(pub *ecdsa.PublicKey) []byte {
	h := sha1.Sum(elliptic.Marshal(pub.Curve, pub.X, pub.Y))
	return h[:]
}

// rate runs fn repeatedly for about ms milliseconds and returns calls per second.
func rate(ms int, fn func()) float64 {
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	start := time.Now()
	n := 0
	for time.Now().Before(deadline) {
		for i := 0; i < 16; i++ {
			fn()
		}
		n += 16
	}
	return float64(n) / time.Since(start).Seconds()
}

func main() {
	ms := flag.Int("ms", 1500, "milliseconds per measurement")
	flag.Parse()

	// Signing CA: a P-256 intermediate under a self-signed root, as meshca's internal backend has.
	now := time.Now()
	// caCert makes a P-256 CA certificate for a fresh key, signed by parent (self-signed when parent is nil).
	caCert := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{Organization: []string{"bench"}, CommonName: cn},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			SubjectKeyId: skid(&key.PublicKey),
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		must(err)
		cert, err := x509.ParseCertificate(der)
		must(err)
		return cert, key
	}
	root, rootKey := caCert("root", nil, nil)
	ca, caKey := caCert("signing CA", root, rootKey)

	id, err := url.Parse("spiffe://bench.local/ns/default/sa/w")
	must(err)
	leaf := func(pub *ecdsa.PublicKey) []byte {
		t := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber: serial(), URIs: []*url.URL{id}, DNSNames: []string{"w.bench.svc"},
			NotBefore: t.Add(-30 * time.Second), NotAfter: t.Add(time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true, IsCA: false,
			SubjectKeyId: skid(pub),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		must(err)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}

	// (a) the CA generates the key (SDS): key pair, certificate, PKCS#8 PEM of the key.
	genKey := func() {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		leaf(&k.PublicKey)
		p8, err := x509.MarshalPKCS8PrivateKey(k)
		must(err)
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	}
	// (b) the caller sends a CSR (Istio, controllers): parse, check its signature, sign its key.
	csrs := make([][]byte, 256)
	for i := range csrs {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		csrs[i], err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, k)
		must(err)
	}
	ci := 0
	fromCsr := func() {
		csr, err := x509.ParseCertificateRequest(csrs[ci%len(csrs)])
		ci++
		must(err)
		must(csr.CheckSignature())
		leaf(csr.PublicKey.(*ecdsa.PublicKey))
	}
	digest := make([]byte, 32)
	_, err = rand.Read(digest)
	must(err)

	genKey()
	fromCsr()
	out := result{GoVersion: runtime.Version(), GoMaxProcs: runtime.GOMAXPROCS(0), MillisEach: *ms}
	out.GenerateKey = rate(*ms, genKey)
	out.Csr = rate(*ms, fromCsr)
	out.RawSign = rate(*ms/2, func() {
		_, err := ecdsa.SignASN1(rand.Reader, caKey, digest)
		must(err)
	})
	out.RawKeygen = rate(*ms/2, func() {
		_, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
	})
	must(json.NewEncoder(os.Stdout).Encode(out))
}
