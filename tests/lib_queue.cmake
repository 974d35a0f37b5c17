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
target_link_libraries(test_crash PRIVATE hp_crash_helpers)
hopper_add_test(test_inspect SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_inspect.c LABELS unit
                TIMEOUT 60)
