//! openraft's own storage test suite against `LogStore` + `StateMachine`.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use picloud_storage::{LogStore, NodeId, StateMachine, StorageOptions, TypeConfig};

/// Opens storage in a fresh temp dir for every test; the dir lives as long
/// as the guard.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StorageOptions {
            cache_capacity_bytes: 4 << 20,
            ..StorageOptions::default()
        };
        let storage = picloud_storage::open(dir.path(), &options).expect("open storage");
        Ok((dir, storage.log_store, storage.state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(error) = Suite::test_all(TempStoreBuilder) {
        panic!("openraft storage suite failed: {error}");
    }
}
