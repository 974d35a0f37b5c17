# Public-API tests of the queue (hopper.h): unit, concurrency and crash.
hopper_add_test(test_queue
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_queue.c
  LABELS unit TIMEOUT 120)
hopper_add_test(test_concurrency
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_concurrency.c
  LABELS concurrency TIMEOUT 240)
hopper_add_test(test_crash
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_crash.c
  LABELS crash TIMEOUT 240)
hopper_add_test(test_inspect SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_inspect.c LABELS unit
                TIMEOUT 60)
# The memory bound of hopper_close in MEMORY mode (peak RSS of a forked child).
hopper_add_test(test_close_peak SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_close_peak.c
                LABELS unit TIMEOUT 120)
