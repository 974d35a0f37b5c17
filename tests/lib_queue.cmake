# Public-API tests of the queue (hopper.h): unit, concurrency and crash.
hopper_add_test(test_queue
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_queue.c
  LABELS unit TIMEOUT 120)
hopper_add_test(test_concurrency
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_concurrency.c
  LABELS concurrency TIMEOUT 240)
hopper_add_test(test_commit
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_commit.c
  LABELS "unit;concurrency" TIMEOUT 120)
hopper_add_test(test_crash
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_crash.c
  LABELS crash TIMEOUT 240)
target_link_libraries(test_crash PRIVATE hp_crash_helpers)
hopper_add_test(test_inspect SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_inspect.c LABELS unit
                TIMEOUT 60)
# A full file system (a real 20 MiB tmpfs: needs root, else skipped).
hopper_add_test(test_enospc SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_enospc.c LABELS unit
                TIMEOUT 300)
set_tests_properties(test_enospc PROPERTIES SKIP_RETURN_CODE 77)
# The memory bound of hopper_close in MEMORY mode (peak RSS of a forked child).
hopper_add_test(test_close_peak SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_close_peak.c
                LABELS unit TIMEOUT 120)
# Duplicates after a kill -9 in the middle of a fast drain.
hopper_add_test(test_crash_drain SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_crash_drain.c
                LABELS crash TIMEOUT 240)
