// informer-baseline: the floor a pod observer pays. One client-go shared informer holds every
// pod of a namespace, as controller-runtime operators and kube-state-metrics do, and counts the
// watch events it is handed. It does nothing else, so whatever podlife costs beyond it is the
// price of recording history.
//
//	informer-baseline --kubeconfig FILE --namespace NS --listen 127.0.0.1:PORT
//
// GET /events answers "adds updates deletes pods synced_seconds" for the benchmark.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	namespace := flag.String("namespace", "", "namespace whose pods to hold")
	listen := flag.String("listen", "127.0.0.1:0", "loopback address for GET /events")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	cfg.UserAgent = "podlife-bench-informer-baseline"
	client := kubernetes.NewForConfigOrDie(cfg)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(*namespace))
	pods := factory.Core().V1().Pods().Informer()
	var adds, updates, deletes atomic.Int64
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { adds.Add(1) },
		UpdateFunc: func(any, any) { updates.Add(1) },
		DeleteFunc: func(any) { deletes.Add(1) },
	}); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	var syncedSeconds atomic.Value
	syncedSeconds.Store(-1.0)
	stop := make(chan struct{})
	factory.Start(stop)
	go func() {
		cache.WaitForCacheSync(stop, pods.HasSynced)
		syncedSeconds.Store(time.Since(start).Seconds())
	}()
	http.HandleFunc("/events", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d %d %d %d %.3f\n", adds.Load(), updates.Load(), deletes.Load(), len(pods.GetStore().ListKeys()), syncedSeconds.Load())
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
